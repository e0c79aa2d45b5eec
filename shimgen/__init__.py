"""shimgen: one x86-64 unikernel image that boots under Xen as PV and as PVH."""

__version__ = "0.1.0"
