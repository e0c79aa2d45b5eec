"""C sources built on demand against the host's Xen libraries (package data)."""
