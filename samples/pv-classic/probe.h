/*
 * What pv-classic's C code and its assembly (traps.S) agree on: the values the
 * provoked traps load into rcx and r11, which must come back in the PV frame's two
 * top words and, after the iret hypercall, in the registers themselves.
 */
#ifndef PROBE_H
#define PROBE_H

#define PROBE_RCX 0x5c5c5c5c0000c0c0
#define PROBE_R11 0x1111111100001111

#ifndef __ASSEMBLER__
#include <stdint.h>

/* Set by a probe before the instruction that traps: where the trap handler resumes
 * it, and the rsp the trap's frame must show. 0: no trap is expected. */
extern uint64_t trap_fixup, trap_probe_rsp;

/* Each runs one trapping instruction at its *_at label (int3 at provoke_bp_at)
 * and returns 0 when rcx and r11 came back as PROBE_RCX and PROBE_R11. */
extern char provoke_bp_at[], provoke_ud_at[], provoke_de_at[], provoke_gp_at[], provoke_pf_at[];
long provoke_bp(void);
long provoke_ud(void);
long provoke_de(void);
long provoke_gp(void);
long provoke_pf(const void *unmapped);

/* A read that may fault, and a selector load that may fault: 0 and the value read
 * (the selector read back), or -1 when the trap handler resumed after a fault. */
long probe_read(const uint64_t *address, uint64_t *value);
long probe_load_es(uint16_t selector);

/* The entry points Xen bounces to (set_trap_table, the callbacks). */
void trap_de(void), trap_bp(void), trap_ud(void), trap_gp(void), trap_pf(void);
void event_callback(void), failsafe_callback(void);
#endif

#endif
