"""The shim itself: assembly templates rendered with the plan's values, assembled
with Keystone, and the page tables its PVH path runs on."""
