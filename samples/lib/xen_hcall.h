/*
 * Hypercalls through the hypercall page (filled by Xen for PV, by the guest via
 * the cpuid/MSR protocol for PVH). Each stub is 32 bytes; the register ABI follows
 * the CPU mode the guest is in when it calls: 64-bit rdi, rsi, rdx; 32-bit ebx,
 * ecx, edx.
 */
#ifndef XEN_HCALL_H
#define XEN_HCALL_H

#define __XEN_INTERFACE_VERSION__ __XEN_LATEST_INTERFACE_VERSION__
#include <xen/xen.h>

extern char hypercall_page[4096];

static inline long hypercall3(unsigned nr, unsigned long a1, unsigned long a2, unsigned long a3)
{
	long ret;
	void *stub = hypercall_page + nr * 32;
#ifdef __x86_64__
	register unsigned long rdi __asm__("rdi") = a1;
	register unsigned long rsi __asm__("rsi") = a2;
	register unsigned long rdx __asm__("rdx") = a3;
	/* The PV stub uses syscall (clobbers rcx, r11); Xen may clobber argument registers. */
	__asm__ volatile("call *%[stub]"
			 : "=a"(ret), "+r"(rdi), "+r"(rsi), "+r"(rdx)
			 : [stub] "r"(stub)
			 : "rcx", "r8", "r9", "r10", "r11", "memory");
#else
	unsigned long b = a1, c = a2, d = a3;
	__asm__ volatile("call *%[stub]"
			 : "=a"(ret), "+b"(b), "+c"(c), "+d"(d)
			 : [stub] "r"(stub)
			 : "memory");
#endif
	return ret;
}

#define hypercall2(nr, a1, a2) hypercall3((nr), (a1), (a2), 0)

#endif
