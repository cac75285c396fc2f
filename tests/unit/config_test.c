/* config: defaults, precedence (flags > env > defaults), validation errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static int parse(struct config *cfg, char **argv, const char *const *envp, char *err)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    FILE *devnull = fopen("/dev/null", "w");
    int rc = config_parse(cfg, argc, argv, envp, devnull, err, 256);
    fclose(devnull);
    return rc;
}

static void defaults_apply_with_no_flags(void **state)
{
    struct config cfg;
    char err[256];
    char *argv[] = {"tickfand", NULL};
    assert_int_equal(parse(&cfg, argv, NULL, err), CONFIG_OK);
    assert_string_equal(cfg.listen, "0.0.0.0:50051");
    assert_int_equal(cfg.heartbeat_ms, 5000);
    assert_int_equal(cfg.log_size, 64 * 1024 * 1024);
    assert_null(cfg.topics);
    assert_null(cfg.feeds);
    config_free(&cfg);
}

static void flags_override_environment_which_overrides_defaults(void **state)
{
    struct config cfg;
    char err[256];
    const char *env[] = {"TICKFAN_HEARTBEAT_MS=700", "TICKFAN_LISTEN=127.0.0.1:1",
                         "TICKFAN_TOPICS=a,b", NULL};
    char *argv[] = {"tickfand", "--listen", "127.0.0.1:2", NULL};
    assert_int_equal(parse(&cfg, argv, env, err), CONFIG_OK);
    assert_int_equal(cfg.heartbeat_ms, 700);        /* env over default */
    assert_string_equal(cfg.listen, "127.0.0.1:2"); /* flag over env */
    assert_string_equal(cfg.topics[0], "a");
    assert_string_equal(cfg.topics[1], "b");
    assert_null(cfg.topics[2]);
    config_free(&cfg);

    char *argv2[] = {"tickfand", "--topic", "c", "--topic=d", NULL};
    assert_int_equal(parse(&cfg, argv2, env, err), CONFIG_OK);
    assert_string_equal(cfg.topics[0], "c"); /* list flags replace the env list */
    assert_string_equal(cfg.topics[1], "d");
    assert_null(cfg.topics[2]);
    config_free(&cfg);
}

static void sizes_take_binary_suffixes(void **state)
{
    int64_t v;
    assert_int_equal(config_parse_size("64K", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(config_parse_size("2MiB", &v), 0);
    assert_int_equal(v, 2 * 1024 * 1024);
    assert_int_equal(config_parse_size("1g", &v), 0);
    assert_int_equal(v, 1024 * 1024 * 1024);
    assert_int_equal(config_parse_size("12", &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(config_parse_size("12Q", &v), -EINVAL);
    assert_int_equal(config_parse_size("", &v), -EINVAL);
    assert_int_equal(config_parse_size("-1", &v), -EINVAL);
}

static void bad_values_name_the_option_and_the_value(void **state)
{
    struct {
        char *argv[4];
        const char *want[2];
    } cases[] = {
        {{"tickfand", "--heartbeat-ms", "abc", NULL}, {"--heartbeat-ms", "abc"}},
        {{"tickfand", "--heartbeat-ms", "5", NULL}, {"--heartbeat-ms", "out of range"}},
        {{"tickfand", "--log-size", "1K", NULL}, {"--log-size", "1K"}},
        {{"tickfand", "--log-level", "loud", NULL}, {"--log-level", "loud"}},
        {{"tickfand", "--bogus", "1", NULL}, {"--bogus", "unknown option"}},
        {{"tickfand", "--listen", NULL}, {"--listen", "missing value"}},
        {{"tickfand", "stray", NULL}, {"stray", "unexpected"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config cfg;
        char err[256] = "";
        assert_int_equal(parse(&cfg, cases[i].argv, NULL, err), -EINVAL);
        assert_non_null(strstr(err, cases[i].want[0]));
        assert_non_null(strstr(err, cases[i].want[1]));
    }
    struct config cfg;
    char err[256] = "";
    const char *env[] = {"TICKFAN_SHARDS=lots", NULL};
    char *argv[] = {"tickfand", NULL};
    assert_int_equal(parse(&cfg, argv, env, err), -EINVAL);
    assert_non_null(strstr(err, "TICKFAN_SHARDS"));
    assert_non_null(strstr(err, "lots"));
}

static void an_empty_value_unsets_an_option_with_no_default(void **state)
{
    struct config cfg;
    char err[256] = "";
    /* an image sets the endpoint; `-e TICKFAN_METRICS_LISTEN=` turns it off */
    const char *env[] = {"TICKFAN_METRICS_LISTEN=", "TICKFAN_CONFIG=", NULL};
    char *argv[] = {"tickfand", NULL};
    assert_int_equal(parse(&cfg, argv, env, err), CONFIG_OK);
    assert_null(cfg.metrics_listen);
    assert_null(cfg.config_file);
    config_free(&cfg);

    const char *env2[] = {"TICKFAN_METRICS_LISTEN=0.0.0.0:9464", NULL};
    char *argv2[] = {"tickfand", "--metrics-listen=", NULL};
    assert_int_equal(parse(&cfg, argv2, env2, err), CONFIG_OK);
    assert_null(cfg.metrics_listen);
    config_free(&cfg);

    /* an option with a default still refuses an empty value, by name */
    char *argv3[] = {"tickfand", "--listen=", NULL};
    assert_int_equal(parse(&cfg, argv3, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "--listen"));
    assert_non_null(strstr(err, "empty value"));
}

static void help_and_version_stop_without_error(void **state)
{
    struct config cfg;
    char err[256];
    char *help[] = {"tickfand", "--help", NULL};
    assert_int_equal(parse(&cfg, help, NULL, err), CONFIG_HELP);
    char *version[] = {"tickfand", "--version", NULL};
    assert_int_equal(parse(&cfg, version, NULL, err), CONFIG_VERSION);
}

static const char *write_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/tickfan-config-test-%d.ini", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void config_file_sets_options_and_topic_sections(void **state)
{
    const char *path = write_file("# comment\nheartbeat-ms = 700\ntopic = a\ntopic = b\n\n"
                                  "[topic fast]\nlog-size = 128K\noverflow = conflate\n"
                                  "max-lag-events = 500\n");
    char *argv[] = {"tickfand", "--config", (char *)path, NULL};
    struct config cfg;
    char err[256];
    assert_int_equal(parse(&cfg, argv, NULL, err), CONFIG_OK);
    assert_int_equal(cfg.heartbeat_ms, 700);
    assert_string_equal(cfg.topics[0], "a");
    assert_string_equal(cfg.topics[1], "b");
    assert_int_equal(cfg.ntopic_confs, 1);
    assert_string_equal(cfg.topic_confs[0].name, "fast");
    assert_int_equal(cfg.topic_confs[0].log_size, 128 * 1024);
    assert_string_equal(cfg.topic_confs[0].overflow, "conflate");
    assert_int_equal(cfg.topic_confs[0].max_lag_bytes, -1); /* inherits */
    assert_int_equal(cfg.topic_confs[0].max_lag_events, 500);
    assert_int_equal(cfg.max_lag_events, 100000); /* the documented default */
    config_free(&cfg);
    unlink(path);
}

static void flags_and_environment_override_the_file(void **state)
{
    const char *path = write_file("heartbeat-ms = 700\nsim-rate = 5\ntopic = a\n");
    const char *env[] = {"TICKFAN_SIM_RATE=6", "TICKFAN_TOPICS=x,y", NULL};
    char *argv[] = {"tickfand", "--config", (char *)path, "--heartbeat-ms", "900", NULL};
    struct config cfg;
    char err[256];
    assert_int_equal(parse(&cfg, argv, env, err), CONFIG_OK);
    assert_int_equal(cfg.heartbeat_ms, 900); /* flag over file */
    assert_int_equal(cfg.sim_rate, 6);       /* env over file */
    assert_string_equal(cfg.topics[0], "x"); /* an env list replaces the file's */
    assert_null(cfg.topics[2]);
    config_free(&cfg);
    unlink(path);
}

static void bad_file_values_name_the_file_line_option_and_value(void **state)
{
    struct {
        const char *text;
        const char *want[3];
    } cases[] = {
        {"heartbeat-ms = 700\nsim-rate = fast\n", {":2", "sim-rate", "fast"}},
        {"nope = 1\n", {":1", "unknown option", "nope"}},
        {"[topic t]\nlisten = x\n", {":2", "listen", "per topic"}},
        {"[other]\nx = 1\n", {":2", "unknown section", "other"}},
        {"log-size = 1K\n", {":1", "log-size", "1K"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = write_file(cases[i].text);
        char *argv[] = {"tickfand", "--config", (char *)path, NULL};
        struct config cfg;
        char err[256] = "";
        assert_int_equal(parse(&cfg, argv, NULL, err), -EINVAL);
        for (int k = 0; k < 3; k++)
            if (!strstr(err, cases[i].want[k]))
                fail_msg("case %zu: '%s' not in '%s'", i, cases[i].want[k], err);
        unlink(path);
    }
    char *argv[] = {"tickfand", "--config", "/nonexistent/x.ini", NULL};
    struct config cfg;
    char err[256] = "";
    assert_int_equal(parse(&cfg, argv, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "/nonexistent/x.ini"));
}

static void changed_options_are_listed_by_name(void **state)
{
    struct config a, b;
    char err[256], out[256];
    char *argv1[] = {"tickfand", "--heartbeat-ms", "700", "--topic", "t", NULL};
    char *argv2[] = {"tickfand", "--heartbeat-ms", "800", "--topic", "t", "--shards", "1", NULL};
    assert_int_equal(parse(&a, argv1, NULL, err), CONFIG_OK);
    assert_int_equal(parse(&b, argv2, NULL, err), CONFIG_OK);
    config_changed(&a, &b, out, sizeof(out));
    assert_string_equal(out, "heartbeat-ms,shards");
    config_changed(&a, &a, out, sizeof(out));
    assert_string_equal(out, "");
    config_free(&a);
    config_free(&b);
}

static void boolean_options_take_the_flag_alone_or_a_value(void **state)
{
    (void)state;
    struct config cfg;
    char err[256];
    char *off[] = {"tickfand", NULL};
    assert_int_equal(parse(&cfg, off, NULL, err), CONFIG_OK);
    assert_int_equal(cfg.auto_create_topics, 0);
    config_free(&cfg);

    /* the flag alone does not swallow the next argument */
    char *alone[] = {"tickfand", "--auto-create-topics", "--topic", "x", NULL};
    assert_int_equal(parse(&cfg, alone, NULL, err), CONFIG_OK);
    assert_int_equal(cfg.auto_create_topics, 1);
    assert_string_equal(cfg.topics[0], "x");
    config_free(&cfg);

    char *no[] = {"tickfand", "--auto-create-topics=off", NULL};
    const char *const yes_env[] = {"TICKFAN_AUTO_CREATE_TOPICS=yes", NULL};
    assert_int_equal(parse(&cfg, no, yes_env, err), CONFIG_OK);
    assert_int_equal(cfg.auto_create_topics, 0); /* the flag beats the environment */
    config_free(&cfg);
    assert_int_equal(parse(&cfg, off, yes_env, err), CONFIG_OK);
    assert_int_equal(cfg.auto_create_topics, 1);
    config_free(&cfg);

    char *bad[] = {"tickfand", "--auto-create-topics=sometimes", NULL};
    assert_int_equal(parse(&cfg, bad, NULL, err), -EINVAL);
    assert_non_null(strstr(err, "--auto-create-topics"));
    assert_non_null(strstr(err, "'sometimes'"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_apply_with_no_flags),
        cmocka_unit_test(boolean_options_take_the_flag_alone_or_a_value),
        cmocka_unit_test(flags_override_environment_which_overrides_defaults),
        cmocka_unit_test(sizes_take_binary_suffixes),
        cmocka_unit_test(bad_values_name_the_option_and_the_value),
        cmocka_unit_test(an_empty_value_unsets_an_option_with_no_default),
        cmocka_unit_test(help_and_version_stop_without_error),
        cmocka_unit_test(config_file_sets_options_and_topic_sections),
        cmocka_unit_test(flags_and_environment_override_the_file),
        cmocka_unit_test(bad_file_values_name_the_file_line_option_and_value),
        cmocka_unit_test(changed_options_are_listed_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
