"""The polyshift command: each command builds one object and calls one method; errors become exit codes in one place."""
