"""The ``aminate`` command line: dispatch, commands, configuration files and output."""
