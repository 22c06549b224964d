/* Internal symbols get an emma__ prefix: they are hidden from the dynamic
 * symbol table anyway, but in a static link (libemma.a) they would otherwise
 * clash with a program's own names.  Keep in step with internal.h and policy.h;
 * tests/symbols.sh checks that libemma.a defines nothing else unprefixed.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_NAMESPACE_H
#define EMMA_NAMESPACE_H
#define addrmap_clear emma__addrmap_clear
#define addrmap_lookup emma__addrmap_lookup
#define addrmap_mark emma__addrmap_mark
#define addrmap_segment emma__addrmap_segment
#define alloc_generic emma__alloc_generic
#define alloc_zeroed emma__alloc_zeroed
#define bin_push_back emma__bin_push_back
#define bin_push_front emma__bin_push_front
#define bin_remove emma__bin_remove
#define check_layout emma__check_layout
#define check_mark_free emma__check_mark_free
#define check_pointer emma__check_pointer
#define class_for emma__class_for
#define emma_fatal emma__emma_fatal
#define empty_page emma__empty_page
#define fork_detected emma__fork_detected
#define fork_init emma__fork_init
#define fork_recover emma__fork_recover
#define free_generic emma__free_generic
#define heap_acquire_for_thread emma__heap_acquire_for_thread
#define heap_collect_remote emma__heap_collect_remote
#define heap_empty emma__heap_empty
#define heap_list_first emma__heap_list_first
#define heap_lock_any emma__heap_lock_any
#define heap_new emma__heap_new
#define heap_purge emma__heap_purge
#define heap_purge_older emma__heap_purge_older
#define heap_release_empty_pages emma__heap_release_empty_pages
#define heap_reset emma__heap_reset
#define heap_slot_limit emma__heap_slot_limit
#define heap_slots emma__heap_slots
#define huge_alloc emma__huge_alloc
#define huge_cache_expire emma__huge_cache_expire
#define huge_free emma__huge_free
#define huge_realloc emma__huge_realloc
#define huge_usable emma__huge_usable
#define mem_copy emma__mem_copy
#define mem_zero emma__mem_zero
#define os_abort emma__os_abort
#define os_advise_huge_pages emma__os_advise_huge_pages
#define os_futex_trylock_pi emma__os_futex_trylock_pi
#define os_getpid emma__os_getpid
#define os_gettid emma__os_gettid
#define os_map emma__os_map
#define os_map_aligned emma__os_map_aligned
#define os_purge emma__os_purge
#define os_remap emma__os_remap
#define os_seccomp_active emma__os_seccomp_active
#define os_secret emma__os_secret
#define os_set_errno emma__os_set_errno
#define os_thread_gone emma__os_thread_gone
#define os_unmap emma__os_unmap
#define os_wipe_on_fork emma__os_wipe_on_fork
#define os_write_stderr emma__os_write_stderr
#define os_yield emma__os_yield
#define page_extend emma__page_extend
#define page_free_local_slow emma__page_free_local_slow
#define page_free_remote emma__page_free_remote
#define page_init emma__page_init
#define page_mark_full emma__page_mark_full
#define page_park emma__page_park
#define page_revive emma__page_revive
#define page_should_park emma__page_should_park
#define page_unpark emma__page_unpark
#define policy_before_fresh_page emma__policy_before_fresh_page
#define policy_before_map emma__policy_before_map
#define policy_huge_cache_full emma__policy_huge_cache_full
#define policy_huge_cacheable emma__policy_huge_cacheable
#define policy_keep_empty_segment emma__policy_keep_empty_segment
#define policy_page_freed emma__policy_page_freed
#define policy_thin_page emma__policy_thin_page
#define policy_trim emma__policy_trim
#define realloc_block emma__realloc_block
#define segment_header_size emma__segment_header_size
#define segment_of_page emma__segment_of_page
#define segment_page_alloc emma__segment_page_alloc
#define segment_page_release emma__segment_page_release
#define sparse_pass emma__sparse_pass
#define tls_heap emma__tls_heap
#define usable_size emma__usable_size
#endif
