/* text: strict UTF-8 without NUL; wire_check_text over protobuf bytes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "events/v1/publisher.pb-c.h"
#include "events/v1/watcher.pb-c.h"
#include "text.h"
#include "wire.h"

#define OK(s) assert_true(text_valid(s, sizeof(s) - 1))
#define BAD(s) assert_false(text_valid(s, sizeof(s) - 1))

static void well_formed_utf8_is_valid(void **state)
{
    assert_true(text_valid("", 0));
    OK("AAPL");
    OK("\xc2\x80");                  /* U+0080 */
    OK("\xdf\xbf");                  /* U+07FF */
    OK("\xe0\xa0\x80");              /* U+0800 */
    OK("\xed\x9f\xbf");              /* U+D7FF, just below the surrogates */
    OK("\xee\x80\x80");              /* U+E000, just above */
    OK("\xef\xbf\xbf");              /* U+FFFF */
    OK("\xf0\x90\x80\x80");          /* U+10000 */
    OK("\xf4\x8f\xbf\xbf");          /* U+10FFFF */
    OK("\xe2\x82\xac-\xe6\x97\xa5"); /* mixed */
}

static void nul_and_malformed_sequences_are_not(void **state)
{
    BAD("A\0B");
    BAD("\0");
    BAD("\x80");     /* a lone continuation byte */
    BAD("\xc3\x28"); /* lead without its continuation */
    BAD("\xc3");     /* cut short at the end */
    BAD("\xe2\x82");
    BAD("\xc0\xaf"); /* overlong '/' */
    BAD("\xc1\xbf");
    BAD("\xe0\x9f\xbf");     /* overlong 3-byte */
    BAD("\xf0\x8f\xbf\xbf"); /* overlong 4-byte */
    BAD("\xed\xa0\x80");     /* U+D800, a surrogate */
    BAD("\xed\xbf\xbf");     /* U+DFFF */
    BAD("\xf4\x90\x80\x80"); /* above U+10FFFF */
    BAD("\xf5\x80\x80\x80");
    BAD("\xff");
    BAD("\xe2\x28\xa1"); /* bad third byte */
}

static size_t pack_request(const char *topic, const char *key, uint8_t *buf)
{
    Events__V1__WatchRequest r = EVENTS__V1__WATCH_REQUEST__INIT;
    char *keys[2] = {"AAPL", (char *)key};
    r.topic = (char *)topic;
    r.keys = keys;
    r.n_keys = 2;
    r.start_unix_micros = 123456789;
    r.snapshot = 1;
    return events__v1__watch_request__pack(&r, buf);
}

static void wire_check_text_names_the_field_that_is_bad(void **state)
{
    uint8_t buf[256];
    char why[200];
    size_t n = pack_request("sim", "MSFT", buf);
    assert_int_equal(
        wire_check_text(&events__v1__watch_request__descriptor, buf, n, why, sizeof(why)), 0);
    n = pack_request("sim", "M\xffSFT", buf);
    assert_int_equal(
        wire_check_text(&events__v1__watch_request__descriptor, buf, n, why, sizeof(why)), -EILSEQ);
    assert_string_equal(why, "keys is not valid UTF-8");
    /* an embedded NUL: written by hand, protobuf-c would stop at it */
    const uint8_t nul[] = {0x0a, 3, 's', 0, 'm'};
    assert_int_equal(
        wire_check_text(&events__v1__watch_request__descriptor, nul, sizeof(nul), why, sizeof(why)),
        -EILSEQ);
    assert_string_equal(why, "topic holds a NUL byte");
}

static void bytes_fields_and_unknown_fields_are_not_checked(void **state)
{
    char why[200];
    /* PublishRequest body (4) is bytes; field 99 is unknown */
    const uint8_t msg[] = {0x0a, 1, 'p', 0x22, 2, 0xff, 0x00, 0x9a, 0x06, 1, 0xff};
    assert_int_equal(wire_check_text(&events__v1__publish_request__descriptor, msg, sizeof(msg),
                                     why, sizeof(why)),
                     0);
}

static void bytes_that_do_not_frame_are_ebadmsg(void **state)
{
    char why[200];
    const uint8_t cut[] = {0x0a, 9, 's', 'i', 'm'}; /* length past the end */
    const uint8_t group[] = {0x0b, 0x0c};           /* a group (wire type 3) */
    const uint8_t varint[] = {0x28, 0xff, 0xff};    /* a varint cut short */
    const ProtobufCMessageDescriptor *d = &events__v1__watch_request__descriptor;
    assert_int_equal(wire_check_text(d, cut, sizeof(cut), why, sizeof(why)), -EBADMSG);
    assert_int_equal(wire_check_text(d, group, sizeof(group), why, sizeof(why)), -EBADMSG);
    assert_int_equal(wire_check_text(d, varint, sizeof(varint), why, sizeof(why)), -EBADMSG);
    assert_int_equal(wire_check_text(d, NULL, 0, why, sizeof(why)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(well_formed_utf8_is_valid),
        cmocka_unit_test(nul_and_malformed_sequences_are_not),
        cmocka_unit_test(wire_check_text_names_the_field_that_is_bad),
        cmocka_unit_test(bytes_fields_and_unknown_fields_are_not_checked),
        cmocka_unit_test(bytes_that_do_not_frame_are_ebadmsg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
