"""The ``lm-router`` command line: commands.py parses options and calls the library
(lm_router_plugin.api); display.py prints what it returns."""
