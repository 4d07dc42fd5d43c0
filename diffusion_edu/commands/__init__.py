"""The command line's commands, one module each, above every other layer of the package.

Each module defines ``add_cli(subparsers)``; :mod:`diffusion_edu.cli` lists the modules it loads. A
command parses its arguments, calls the package's functions and prints or writes the result.
"""
