/* SPDX-License-Identifier: MIT */
/*
 * Writes fuzz_cache's seed corpus into DIR: small valid cache files and
 * sequence images written by the library itself (cpu plugin), one per
 * shape/type/rotation below, each preceded by fuzz_cache's mode byte.
 * Usage: make_cache_seeds DIR   (plugins: TKV_FUZZ_PLUGIN_DIR or
 * BUILD/plugins/cpu beside this executable)
 */
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "turbokv.h"

static int die(const char *what)
{
    fprintf(stderr, "make_cache_seeds: %s: %s\n", what, tkv_last_error());
    return 1;
}

/* Copies file `tmp` to DIR/name with the mode byte in front. */
static int emit(const char *dir, const char *name, uint8_t mode, const char *tmp)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    FILE *in = fopen(tmp, "rb"), *o = fopen(out, "wb");
    if (!in || !o)
        return 1;
    fputc(mode, o);
    int ch;
    while ((ch = fgetc(in)) != EOF)
        fputc(ch, o);
    fclose(in);
    unlink(tmp);
    return fclose(o) != 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_cache_seeds DIR\n");
        return 2;
    }
    char dir[PATH_MAX], exe[PATH_MAX], tmp[PATH_MAX];
    const char *env = getenv("TKV_FUZZ_PLUGIN_DIR");
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (env)
        snprintf(dir, sizeof dir, "%s", env);
    else if (n > 0 && (exe[n] = '\0', 1))
        snprintf(dir, sizeof dir, "%s/../plugins/cpu", dirname(exe));
    else
        return 1;
    snprintf(tmp, sizeof tmp, "/tmp/tkv-seed-%d.bin", (int)getpid());
    struct tkv_context_options o = { .struct_size = sizeof o, .backend = "cpu", .plugin_path = dir,
                                     .ignore_env = 1 };
    tkv_context *ctx;
    if (tkv_context_open(&o, &ctx) != TKV_OK)
        return die("tkv_context_open");

    static const struct {
        const char *name;
        uint32_t layers, heads, head_dim, seqs, k, v, rotation, block;
        uint32_t tokens[2];
    } shapes[] = {
        { "k8v3-d8", 2, 2, 8, 2, TKV_TYPE_Q8_0, TKV_TYPE_TURBO3, TKV_ROTATION_WHT, 4, { 5, 3 } },
        { "t4t2-d16-dense", 1, 1, 16, 1, TKV_TYPE_TURBO4, TKV_TYPE_TURBO2, TKV_ROTATION_DENSE, 256, { 3, 0 } },
        { "qjl-f16-d32", 1, 2, 32, 2, TKV_TYPE_TURBO3_QJL, TKV_TYPE_F16, TKV_ROTATION_WHT, 2, { 2, 1 } },
        { "f32-none-d8", 1, 1, 8, 1, TKV_TYPE_F32, TKV_TYPE_TURBO3, TKV_ROTATION_NONE, 256, { 2, 0 } },
        { "empty-d8", 1, 1, 8, 2, TKV_TYPE_TURBO3, TKV_TYPE_TURBO3, TKV_ROTATION_WHT, 256, { 0, 0 } },
        { "t3o-t4o-d32", 1, 2, 32, 1, TKV_TYPE_TURBO3_OUT, TKV_TYPE_TURBO4_OUT, TKV_ROTATION_WHT, 4, { 3, 0 } },
    };
    float kv[8 * 2 * 32];
    for (unsigned i = 0; i < sizeof kv / sizeof *kv; i++)
        kv[i] = (float)((i * 37u) % 17u) / 8.0f - 1.0f;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        struct tkv_cache_params p = { .struct_size = sizeof p, .n_layers = shapes[i].layers,
                                      .n_kv_heads = shapes[i].heads, .head_dim = shapes[i].head_dim,
                                      .capacity = 16, .n_seqs = shapes[i].seqs, .k_type = shapes[i].k,
                                      .v_type = shapes[i].v, .rotation = shapes[i].rotation,
                                      .block_tokens = shapes[i].block };
        tkv_cache *c;
        if (tkv_cache_create(ctx, &p, &c) != TKV_OK)
            return die(shapes[i].name);
        for (uint32_t s = 0; s < shapes[i].seqs; s++)
            for (uint32_t l = 0; l < shapes[i].layers; l++)
                if (shapes[i].tokens[s] && tkv_cache_append(c, s, l, shapes[i].tokens[s], kv, kv) != TKV_OK)
                    return die("tkv_cache_append");
        char name[96];
        if (tkv_cache_save(c, tmp) != TKV_OK)
            return die("tkv_cache_save");
        snprintf(name, sizeof name, "%s.cache", shapes[i].name);
        /* mode 0: plain checksum, tkv_cache_restore into the live cache */
        if (emit(argv[1], name, 0, tmp))
            return 1;
        if (tkv_seq_save(c, 0, tmp) != TKV_OK)
            return die("tkv_seq_save");
        snprintf(name, sizeof name, "%s.seq", shapes[i].name);
        /* mode 3: checksum recomputed, tkv_seq_restore */
        if (emit(argv[1], name, 3, tmp))
            return 1;
        tkv_cache_destroy(c);
    }
    tkv_context_close(ctx);
    return 0;
}
