/*
 * Output through the PV console ring a domU gets from its toolstack (start_info's
 * console.domU, or HVM_PARAM_CONSOLE_PFN/EVTCHN): the layout is struct
 * xencons_interface from Xen's public io/console.h; xenconsoled in dom0 reads the
 * "out" half when the event channel fires.
 */
#ifndef XENCONS_H
#define XENCONS_H

#include <stddef.h>

#include "xen_ring.h"
#include <xen/io/console.h>

/* The report sink for the ring (report.c), next to sample.h's SINK_* bits. */
#define SINK_RING 4u

/* Use this ring (mapped at `ring` in this kernel's address space) and port. */
void xencons_attach(struct xencons_interface *ring, evtchn_port_t port);
/* Copy bytes into the ring and notify; waits (bounded) while the ring is full. */
void xencons_write(const char *data, size_t len);
/* Wait (bounded) until xenconsoled has taken everything written so far. */
void xencons_drain(void);

#endif
