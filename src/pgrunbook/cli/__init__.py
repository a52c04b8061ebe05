"""The command line: parse, call the library, render. No decisions live here."""
