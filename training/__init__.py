"""FGAM training: readers for exported dataset versions, Stage-1 and Stage-2.

Nothing in this package imports Django: it runs on GPU clusters that have no database.
"""
