/* The domU rings from a start_info_t (64-bit samples); see domu.h. */
#ifndef START_INFO_RINGS_H
#define START_INFO_RINGS_H

#include "domu.h"
#include <xen/io/ring.h>

/* pv: Xen PV (frames are mfns, found through the M2P); else PVH through the
 * shim (frames are gfns, identity mapped). */
void domu_rings_from_start_info(struct domu_rings *rings, const start_info_t *si, int pv);

#endif
