/* Shared-ring helpers for the console and xenstore clients; see xen_ring.h. */
#include "xen_ring.h"
#include "arch.h"
#include <xen/sched.h>

/*
 * About five seconds of TSC cycles at 2 GHz: far longer than a live xenconsoled or
 * xenstored takes under QEMU's TCG, short against any boot timeout.
 */
#define RING_WAIT_CYCLES 10000000000ull

void evtchn_notify(evtchn_port_t port)
{
	struct evtchn_send send = { .port = port };

	hypercall2(__HYPERVISOR_event_channel_op, EVTCHNOP_send, (unsigned long)&send);
}

void ring_wait_start(struct ring_wait *wait)
{
	wait->start = rdtsc();
}

int ring_wait_over(struct ring_wait *wait)
{
	hypercall2(__HYPERVISOR_sched_op, SCHEDOP_yield, 0);
	return rdtsc() - wait->start > RING_WAIT_CYCLES;
}
