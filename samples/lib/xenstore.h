/*
 * A xenstore client for one request at a time over the ring a domU gets from its
 * toolstack (start_info's store_mfn/store_evtchn, or HVM_PARAM_STORE_PFN/EVTCHN):
 * struct xenstore_domain_interface and the message header struct xsd_sockmsg from
 * Xen's public io/xs_wire.h; xenstored in dom0 serves the ring.
 */
#ifndef XENSTORE_H
#define XENSTORE_H

#include <stddef.h>

#include "xen_ring.h"
#include <xen/io/xs_wire.h>

/*
 * XS_READ of `path` (relative paths are under the domain's own
 * /local/domain/<domid>/): the value, NUL-terminated and cut to size - 1 bytes,
 * in `value`. Returns 0, or a negative code: XENSTORE_ENOANSWER (no reply before
 * the wait's bound), XENSTORE_EREPLY (XS_ERROR: its text, e.g. "ENOENT", in
 * `value`), XENSTORE_EPROTO (a reply that breaks the protocol).
 */
#define XENSTORE_ENOANSWER (-1)
#define XENSTORE_EREPLY (-2)
#define XENSTORE_EPROTO (-3)
int xenstore_read(struct xenstore_domain_interface *ring, evtchn_port_t port, const char *path,
		  char *value, size_t size);
/* A short name for a xenstore_read result, for the report. */
const char *xenstore_error_name(int error);

#endif
