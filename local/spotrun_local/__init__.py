"""spotrun's local runtime: the real handlers and agents on one machine, against moto's server."""
