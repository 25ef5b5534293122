"""Adoption: bring an existing project in.

``import`` converts another tool's migration directory into polyshift's layout (one reader
module per format behind ``model.SourceReader``); ``baseline`` records that a store is already
at a version, reading the other tool's history table where there is one (``history``).
"""
