"""Assembly templates of the boot shim, shipped as package data (``*.S``)."""
