"""wfapp's built-in trigger types, one module each (installed as `wfapp.builtin_plugins`)."""
