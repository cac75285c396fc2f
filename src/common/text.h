/*
 * text: what a protobuf `string` may hold when tickfan stores or sends it.
 *
 * Every protobuf runtime that checks UTF-8 (Python, Go, Java, JS) refuses
 * to decode a message whose string field is not valid UTF-8, and C code
 * that treats a string as NUL-terminated cuts it at an embedded NUL. So a
 * string that reaches a topic log, a filter or a name lookup must be valid
 * UTF-8 without NUL. Pure functions, any thread.
 */
#ifndef TICKFAN_TEXT_H
#define TICKFAN_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True when the len bytes at s are well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF) with no NUL. */
bool text_valid(const char *s, size_t len);

#endif
