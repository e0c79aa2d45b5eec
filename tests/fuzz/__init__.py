"""Fuzzing shimgen's image readers: hostile ELFs, mutations of real images, oracles.

`elf`      field layout of ELF headers, independent of shimgen's own declarations
`hostile`  hand-made hostile ELFs, one named case per attack
`mutate`   structure-aware mutations of a seed image (a hypothesis strategy)
`seeds`    the seed corpus: samples, patched samples, GRUB's Xen images, imagegen
`oracle`   what must hold for any input: in-process and through the CLI
"""
