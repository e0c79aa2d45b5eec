/* Writer side of the PV console ring; see xencons.h. */
#include "xencons.h"

static struct xencons_interface *cons;
static evtchn_port_t cons_port;

void xencons_attach(struct xencons_interface *ring, evtchn_port_t port)
{
	cons = ring;
	cons_port = port;
}

/* Bytes that fit now: the ring holds out_prod - out_cons unread bytes. */
static uint32_t ring_room(void)
{
	return sizeof(cons->out) - (cons->out_prod - ring_index(&cons->out_cons));
}

void xencons_write(const char *data, size_t len)
{
	struct ring_wait wait;

	if (!cons)
		return;
	ring_wait_start(&wait);
	while (len) {
		XENCONS_RING_IDX prod = cons->out_prod;
		uint32_t room = ring_room();
		size_t n = 0;

		if (room > sizeof(cons->out)) /* a backend that moved out_cons past us */
			return;
		if (!room) {
			evtchn_notify(cons_port);
			if (ring_wait_over(&wait))
				return; /* nobody reads this ring: drop the rest */
			continue;
		}
		for (; n < len && n < room; n++)
			cons->out[MASK_XENCONS_IDX(prod + n, cons->out)] = data[n];
		ring_barrier(); /* the bytes before the index that publishes them */
		cons->out_prod = prod + (XENCONS_RING_IDX)n;
		data += n;
		len -= n;
	}
	evtchn_notify(cons_port);
}

void xencons_drain(void)
{
	struct ring_wait wait;

	if (!cons)
		return;
	ring_wait_start(&wait);
	while (ring_index(&cons->out_cons) != cons->out_prod) {
		evtchn_notify(cons_port);
		if (ring_wait_over(&wait))
			return;
	}
}
