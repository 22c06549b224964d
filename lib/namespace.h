/* Internal symbols get an emma__ prefix: they are hidden from the dynamic
 * symbol table anyway, but in a static link (libemma.a) they would otherwise
 * clash with a program's own names.  Keep in step with emma_internal.h;
 * tests/symbols.sh checks that libemma.a defines nothing else unprefixed.
 * SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef EMMA_NAMESPACE_H
#define EMMA_NAMESPACE_H
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
#define heap_lock_any emma__heap_lock_any
#define heap_new emma__heap_new
#define heap_purge emma__heap_purge
#define heap_purge_older emma__heap_purge_older
#define heap_registry_first emma__heap_registry_first
#define heap_release_empty_pages emma__heap_release_empty_pages
#define heap_compact_sparse emma__heap_compact_sparse
#define page_revive emma__page_revive
#define heap_reset emma__heap_reset
#define huge_alloc emma__huge_alloc
#define huge_cache_expire emma__huge_cache_expire
#define huge_free emma__huge_free
#define huge_realloc emma__huge_realloc
#define huge_usable emma__huge_usable
#define mem_copy emma__mem_copy
#define mem_zero emma__mem_zero
#define os_gettid emma__os_gettid
#define os_map emma__os_map
#define os_map_aligned emma__os_map_aligned
#define os_purge emma__os_purge
#define os_remap emma__os_remap
#define os_secret emma__os_secret
#define os_set_errno emma__os_set_errno
#define os_unmap emma__os_unmap
#define os_yield emma__os_yield
#define page_extend emma__page_extend
#define page_free_local_slow emma__page_free_local_slow
#define page_free_remote emma__page_free_remote
#define page_init emma__page_init
#define page_mark_full emma__page_mark_full
#define page_should_park emma__page_should_park
#define page_park emma__page_park
#define page_unpark emma__page_unpark
#define realloc_block emma__realloc_block
#define registry_clear emma__registry_clear
#define registry_lookup emma__registry_lookup
#define registry_mark emma__registry_mark
#define registry_segment emma__registry_segment
#define segment_header_size emma__segment_header_size
#define segment_of_page emma__segment_of_page
#define segment_page_alloc emma__segment_page_alloc
#define segment_page_release emma__segment_page_release
#define spin_lock emma__spin_lock
#define heap_slots emma__heap_slots
#define heap_slot_limit emma__heap_slot_limit
#define tls_heap emma__tls_heap
#define trim_current emma__trim_current
#define usable_size emma__usable_size
#endif
