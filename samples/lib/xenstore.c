/* One-request-at-a-time xenstore client; see xenstore.h. */
#include "xenstore.h"
#include "sample.h"

/* The request id this client puts in every message; xenstored echoes it. */
#define REQUEST_ID 0x5a17

struct store {
	struct xenstore_domain_interface *ring;
	evtchn_port_t port;
	struct ring_wait wait;
};

/* Append len bytes to the request ring, waiting (bounded) for room. */
static int put_request(struct store *s, const void *data, size_t len)
{
	const char *bytes = data;

	while (len) {
		XENSTORE_RING_IDX prod = s->ring->req_prod;
		uint32_t used = prod - ring_index(&s->ring->req_cons);
		size_t n = 0;

		if (used > XENSTORE_RING_SIZE)
			return XENSTORE_EPROTO;
		if (used == XENSTORE_RING_SIZE) {
			evtchn_notify(s->port);
			if (ring_wait_over(&s->wait))
				return XENSTORE_ENOANSWER;
			continue;
		}
		for (; n < len && used + n < XENSTORE_RING_SIZE; n++)
			s->ring->req[MASK_XENSTORE_IDX(prod + n)] = bytes[n];
		ring_barrier(); /* the bytes before the index that publishes them */
		s->ring->req_prod = prod + (XENSTORE_RING_IDX)n;
		bytes += n;
		len -= n;
	}
	return 0;
}

/*
 * Take len bytes of the reply into out (NULL: skip them), waiting (bounded) for
 * xenstored to write them. Consumed bytes are handed back at once, so a reply
 * longer than the ring can still arrive whole.
 */
static int take_reply(struct store *s, void *out, size_t len)
{
	char *bytes = out;

	while (len) {
		XENSTORE_RING_IDX cons = s->ring->rsp_cons;
		uint32_t avail = ring_index(&s->ring->rsp_prod) - cons;
		size_t n = 0;

		if (avail > XENSTORE_RING_SIZE)
			return XENSTORE_EPROTO;
		if (!avail) {
			evtchn_notify(s->port);
			if (ring_wait_over(&s->wait))
				return XENSTORE_ENOANSWER;
			continue;
		}
		ring_barrier(); /* the index before the bytes it covers */
		for (; n < len && n < avail; n++)
			if (bytes)
				bytes[n] = s->ring->rsp[MASK_XENSTORE_IDX(cons + n)];
		ring_barrier(); /* the bytes read before the slots are given back */
		s->ring->rsp_cons = cons + (XENSTORE_RING_IDX)n;
		if (bytes)
			bytes += n;
		len -= n;
		evtchn_notify(s->port);
	}
	return 0;
}

int xenstore_read(struct xenstore_domain_interface *ring, evtchn_port_t port, const char *path,
		  char *value, size_t size)
{
	struct store s = { .ring = ring, .port = port };
	struct xsd_sockmsg msg = {
		.type = XS_READ,
		.req_id = REQUEST_ID,
		.tx_id = 0,
		.len = (uint32_t)str_len(path) + 1, /* the path goes with its NUL */
	};
	size_t kept;
	int error;

	ring_wait_start(&s.wait);
	error = put_request(&s, &msg, sizeof(msg));
	if (!error)
		error = put_request(&s, path, msg.len);
	if (error)
		return error;
	evtchn_notify(port);
	error = take_reply(&s, &msg, sizeof(msg));
	if (error)
		return error;
	if (msg.req_id != REQUEST_ID || msg.len > XENSTORE_PAYLOAD_MAX ||
	    (msg.type != XS_READ && msg.type != XS_ERROR))
		return XENSTORE_EPROTO;
	/* The value has no NUL on the wire; an XS_ERROR text has one. */
	kept = msg.len < size ? msg.len : size - 1;
	error = take_reply(&s, value, kept);
	if (!error)
		error = take_reply(&s, NULL, msg.len - kept);
	if (error)
		return error;
	value[kept] = '\0';
	return msg.type == XS_ERROR ? XENSTORE_EREPLY : 0;
}

const char *xenstore_error_name(int error)
{
	switch (error) {
	case 0:
		return "none";
	case XENSTORE_ENOANSWER:
		return "no answer";
	case XENSTORE_EREPLY:
		return "error reply";
	case XENSTORE_EPROTO:
		return "protocol violation";
	default:
		return "unknown";
	}
}
