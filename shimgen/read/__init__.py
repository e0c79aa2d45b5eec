"""The read side: the input ELF (its tables, Xen notes, symbols), ELF32 containers
turned into ELF64, libelf's verdicts, and what a patched image says about its shim.

Nothing here imports the planner or the writer.
"""
