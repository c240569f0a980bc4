"""One construct per capability; `stacks.spotrun_stack.SpotrunStack` composes them."""
