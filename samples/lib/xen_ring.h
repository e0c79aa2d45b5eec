/*
 * What the console and xenstore clients share: compiler barriers (x86 keeps stores
 * in order and loads in order, so the shared-ring protocol needs no fence, only a
 * compiler that does not move memory accesses across these points), event-channel
 * notification, and bounded waiting for a backend in another domain.
 */
#ifndef XEN_RING_H
#define XEN_RING_H

#include <stdint.h>

#include "xen_hcall.h"
#include <xen/event_channel.h>

static inline void ring_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

/* Reads an index the other side writes: always from memory. */
static inline uint32_t ring_index(const uint32_t *index)
{
	return *(const volatile uint32_t *)index;
}

/* EVTCHNOP_send: wake the backend (xenconsoled, xenstored) in its domain. */
void evtchn_notify(evtchn_port_t port);

/*
 * Waiting for a backend: ask Xen to run someone else (SCHEDOP_yield), so that a
 * dom0 sharing the CPU gets to serve the ring, until ring_wait_over() says the
 * bound is reached. A backend that never answers costs a few seconds, never a hang.
 */
struct ring_wait {
	uint64_t start;
};
void ring_wait_start(struct ring_wait *wait);
int ring_wait_over(struct ring_wait *wait);

#endif
