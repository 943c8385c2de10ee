"""API shapes: what requests may carry and what responses show, one module per resource.

Response shapes are built from table rows by the ``from_row`` constructors; secret values have
no field to live in, so they cannot leak by accident.
"""
