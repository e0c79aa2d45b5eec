/*
 * Assembler macro for one Xen ELF note (name "Xen", 4-byte padding as Xen reads
 * it in both ELF classes). Notes go in .note.Xen, which the linker scripts put in
 * a PT_NOTE of its own with 4-byte alignment.
 */
#ifndef XEN_NOTES_H
#define XEN_NOTES_H

#include <xen/elfnote.h>

/* clang-format off */
#define XEN_ELFNOTE(type, desc)				\
	.pushsection .note.Xen, "a", @note;		\
	.balign 4;					\
	.long 2f - 1f;					\
	.long 4f - 3f;					\
	.long type;					\
1:	.asciz "Xen";					\
2:	.balign 4;					\
3:	desc;						\
4:	.balign 4;					\
	.popsection
/* clang-format on */

#endif
