/* Spin locks for the few places that need mutual exclusion (heaps without
 * TLS).  Callers never wait on one particular lock for long: a heap whose
 * lock is stuck (its holder died or vanished in a fork) is simply skipped.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#include "emma_internal.h"

void spin_lock(_Atomic uint32_t *l)
{
    for (unsigned spins = 0; !spin_trylock(l); spins++) {
        if (spins < 64)
            __builtin_ia32_pause();
        else
            os_yield();
    }
}
