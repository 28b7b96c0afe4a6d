from clarion.cli import entry

entry()
