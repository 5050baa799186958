/* SPDX-License-Identifier: MIT */
/*
 * A privileged (setuid) host: TURBO_CONFIG and TURBO_PLUGIN_PATH name files
 * the invoking user controls, so in a process with AT_SECURE set the core
 * must ignore both (a config file could otherwise add a plugin directory of
 * the user's and have the process run its code with the owner's rights).
 *
 * The test copies nothing: it makes its own executable setuid to the
 * unprivileged user "nobody" (uid 65534) and runs it as root, so the kernel
 * sets AT_SECURE (real uid 0, effective uid 65534). That needs root and a
 * file system that honours setuid bits; otherwise the test is skipped and
 * says why. The executable links the core statically: glibc ignores
 * $ORIGIN rpaths in secure processes.
 *
 *   test_secure                       the test (parent)
 *   test_secure child PLUGIN_DIR      what runs setuid, or plainly as the
 *                                     control: opens a context with the
 *                                     API's plugin_path and TURBO_* set
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "turbokv.h"

#define NOBODY 65534
#define EXIT_NOT_SECURE 77

static char warned[512];

static void log_fn(void *user, int level, const char *message)
{
    (void)user;
    if (level <= TKV_LOG_WARN && strstr(message, "ignored in a privileged"))
        snprintf(warned, sizeof warned, "%s", message);
}

/* Exit 0: the context opened on cpu; 2: it failed (message on stdout). */
static int child(const char *plugin_dir, int want_secure)
{
    if (want_secure && getauxval(AT_SECURE) == 0) {
        printf("AT_SECURE is not set (a nosuid file system?)\n");
        return EXIT_NOT_SECURE;
    }
    struct tkv_context_options o = { .struct_size = sizeof o, .plugin_path = plugin_dir, .log_fn = log_fn };
    tkv_context *ctx = NULL;
    int rc = tkv_context_open(&o, &ctx);
    if (rc != TKV_OK) {
        printf("open failed: %s\n", tkv_last_error());
        return 2;
    }
    printf("backend %s; warning: %s\n", tkv_context_backend(ctx), warned[0] ? warned : "(none)");
    int ok = strcmp(tkv_context_backend(ctx), "cpu") == 0 && (!want_secure || warned[0]);
    tkv_context_close(ctx);
    return ok ? 0 : 3;
}

static char self[4096], config[4096], plugin_dir[4096];

/* Runs this executable as the child; returns its exit status, its output
 * in out. */
static int run_child(const char *mode, char *out, size_t out_size)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        setenv("TURBO_CONFIG", config, 1);
        setenv("TURBO_PLUGIN_PATH", "/nonexistent-turbokv-plugins", 1);
        execl(self, self, mode, plugin_dir, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    size_t n = 0;
    ssize_t got;
    while (n + 1 < out_size && (got = read(pipefd[0], out + n, out_size - 1 - n)) > 0)
        n += (size_t)got;
    out[n] = '\0';
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void privileged_process_ignores_turbo_paths(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("skipped: making a setuid executable needs root\n");
        skip();
    }
    /* a config whose backend cannot exist: honoured, the open fails */
    snprintf(config, sizeof config, "/tmp/tkv-test-secure-%d.yaml", (int)getpid());
    FILE *f = fopen(config, "w");
    assert_non_null(f);
    fputs("backend: no-such-backend\n", f);
    fclose(f);
    chmod(config, 0644);

    char out[1024];
    /* control: the same program without privileges reads TURBO_CONFIG */
    int rc = run_child("control", out, sizeof out);
    if (rc != 2 || !strstr(out, "no-such-backend"))
        fail_msg("control run: exit %d, \"%s\": TURBO_CONFIG should have been read and failed", rc, out);

    struct stat st;
    assert_int_equal(stat(self, &st), 0);
    assert_int_equal(chown(self, NOBODY, (gid_t)-1), 0);
    assert_int_equal(chmod(self, 04755), 0);
    rc = run_child("child", out, sizeof out);
    /* give the build its file back whatever happened */
    chmod(self, st.st_mode & 07777 & ~(mode_t)06000);
    if (chown(self, st.st_uid, st.st_gid) != 0)
        print_message("warning: cannot restore the owner of %s\n", self);
    unlink(config);
    if (rc == EXIT_NOT_SECURE) {
        print_message("skipped: %s", out);
        skip();
    }
    if (rc != 0)
        fail_msg("setuid run: exit %d, \"%s\": TURBO_CONFIG / TURBO_PLUGIN_PATH must be ignored with a warning", rc,
                 out);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        /* _exit: LeakSanitizer cannot inspect a setuid (non-dumpable)
         * process and fails it at exit; the control run, the same code
         * unprivileged, is leak-checked. */
        int rc = child(argv[2], 1);
        fflush(stdout);
        _exit(rc);
    }
    if (argc == 3 && strcmp(argv[1], "control") == 0)
        return child(argv[2], 0);
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    const char *cpu = getenv("TKV_CPU_PLUGIN_DIR");
    if (!cpu) {
        fprintf(stderr, "TKV_CPU_PLUGIN_DIR is not set\n");
        return 1;
    }
    snprintf(plugin_dir, sizeof plugin_dir, "%s", cpu);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(privileged_process_ignores_turbo_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
