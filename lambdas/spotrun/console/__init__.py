"""The console: what a person sees of spotrun in the CloudWatch console (custom widgets) and on the
local page, which serves the same HTML.

Pure presentation, no I/O: `views` turns what the use cases found (`spotrun.overview`) into view
models, in words and in the viewer's time zone; `html` renders them, escaping every value. The
`console` function's handler (`spotrun.handlers.console`) joins them.
"""
