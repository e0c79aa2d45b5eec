"""Checking a result three ways and comparing images: Unicorn emulation of the shim,
real boots (QEMU, Xen inside QEMU), Xen's own parser (libxenguest) and the cache of
Debian packages they use, and the structural diff of two images."""
