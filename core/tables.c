/* SPDX-License-Identifier: MIT */
/*
 * The format's numeric tables (turbokv_format.h):
 *   - Lloyd-Max codebooks for the coordinate density of a random unit vector
 *     in g dimensions (TurboQuant, arXiv 2504.19874, Lemma 1 and section 3.1);
 *   - the randomized Walsh-Hadamard sign vectors D1, D2;
 *   - the dense seeded orthogonal rotations;
 *   - the QJL sketches of the QJL key types (paper, Definition 1);
 *   - tables_id, the FNV-1a identity of all of them.
 * Everything is computed in double from closed forms and integer generators,
 * deterministically, once per seed per process.
 */
#include "tables.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "turbokv_fpenv.h"

/* Centroids of the positive half of the largest codebook. */
#define HALF_MAX (1u << (TKV_TURBO_BITS_MAX - 1u))

/* Lloyd iterations before Newton: enough to make the Jacobian's region of
 * quadratic convergence reachable from the crude initial spacing. */
#define LLOYD_WARMUP 20
#define NEWTON_MAX 50
/* Newton converges quadratically: once a step is this small (relative to
 * the coordinate scale 1/sqrt(g)), the next would be below double rounding. */
#define NEWTON_DONE 1e-10

/* Stream constants of the sign vectors (documented in turbokv_format.h) and
 * of the dense rotations (documented at haar_orthogonal below); the QJL
 * sketches' is TKV_QJL_SEED_MUL. */
#define SIGN_SEED_MUL 0x9E3779B97F4A7C15ull
#define DENSE_SEED_MUL 0xD1B54A32D192ED03ull

/* ---- the coordinate density ------------------------------------------- */

/*
 * A coordinate t of a uniformly random unit vector in R^g has density
 *   f(t) = Gamma(g/2) / (sqrt(pi) Gamma((g-1)/2)) (1 - t^2)^((g-3)/2)
 * on [-1, 1] (paper, Lemma 1). Its partial moments have closed forms, so the
 * Lloyd-Max conditions need no quadrature. With t = sin(phi), x = sin(theta):
 *   M0(x) = int_0^x (1-t^2)^((g-3)/2) dt = int_0^theta cos^(g-2)(phi) dphi
 *         = J_{g-2},  J_n = cos^(n-1)(theta) x / n + (n-1)/n J_{n-2},
 *           J_0 = theta                                (Wallis reduction)
 *   M1(x) = int_0^x t (1-t^2)^((g-3)/2) dt = (1 - (1-x^2)^((g-1)/2)) / (g-1)
 * The reduction adds positive terms only (no cancellation). Group sizes are
 * even, so g - 2 is even and the reduction ends at J_0. The normalization is
 * dropped: the Lloyd-Max conditions only use ratios.
 */
struct density_at {
    double mass;    /* M0(x) */
    double tail;    /* (1 - x^2)^((g-1)/2): M1(x) = (tail(0) - tail(x)) / (g-1) */
    double density; /* (1 - x^2)^((g-3)/2), unnormalized f(x) */
};

static struct density_at density_at(uint32_t g, double x)
{
    double c2 = (1.0 - x) * (1.0 + x), c = sqrt(c2);
    double j = asin(x), p = c, d = c2 > 0.0 ? 1.0 / c : 0.0;
    for (uint32_t n = 2; n <= g - 2; n += 2) {
        j = p * x / n + (double)(n - 1) / n * j;
        d = p;
        p *= c2;
    }
    return (struct density_at){ .mass = j, .tail = p, .density = d };
}

/* ---- Lloyd-Max codebooks ----------------------------------------------- */

/*
 * The optimal codebook of a symmetric density is symmetric, so only the
 * positive half is solved: k = n/2 cells [b_{i-1}, b_i] with b_0 = 0 and
 * b_k = 1, centroids c_i = M1(cell) / M0(cell) (conditional means), and the
 * k - 1 free boundaries b_i = (c_{i-1} + c_i) / 2 (nearest neighbour). Lloyd
 * iterations alternate the two conditions (paper, section 3.1, eq. 4);
 * Newton's method on the boundary equations then converges quadratically,
 * with the Jacobian from the Leibniz rule:
 *   d c_i / d(upper end u) = f(u) (u - c_i) / mass_i
 *   d c_i / d(lower end l) = f(l) (c_i - l) / mass_i
 */
struct half_solution {
    double b[HALF_MAX + 1];
    double c[HALF_MAX];
    double mass[HALF_MAX];
    struct density_at at[HALF_MAX + 1];
};

static void half_centroids(uint32_t g, uint32_t k, struct half_solution *s)
{
    for (uint32_t i = 0; i <= k; i++)
        s->at[i] = density_at(g, s->b[i]);
    for (uint32_t i = 0; i < k; i++) {
        s->mass[i] = s->at[i + 1].mass - s->at[i].mass;
        s->c[i] = (s->at[i].tail - s->at[i + 1].tail) / ((g - 1) * s->mass[i]);
    }
}

/* One Newton step on F_i(b) = b_i - (c_{i-1} + c_i) / 2, i = 1 .. k-1 (the
 * Jacobian is tridiagonal: Thomas algorithm). The step is halved until the
 * boundaries stay strictly increasing inside (0, 1). Returns the largest
 * boundary change. */
static double newton_step(uint32_t k, struct half_solution *s)
{
    double lo[HALF_MAX], di[HALF_MAX], up[HALF_MAX], r[HALF_MAX], step[HALF_MAX + 1];
    const double *b = s->b, *c = s->c, *m = s->mass;
    for (uint32_t i = 1; i < k; i++) {
        double f = s->at[i].density;
        di[i] = 1.0 - 0.5 * (f * (b[i] - c[i - 1]) / m[i - 1] + f * (c[i] - b[i]) / m[i]);
        lo[i] = -0.5 * s->at[i - 1].density * (c[i - 1] - b[i - 1]) / m[i - 1];
        up[i] = -0.5 * s->at[i + 1].density * (b[i + 1] - c[i]) / m[i];
        r[i] = b[i] - 0.5 * (c[i - 1] + c[i]);
    }
    for (uint32_t i = 2; i < k; i++) {
        double w = lo[i] / di[i - 1];
        di[i] -= w * up[i - 1];
        r[i] -= w * r[i - 1];
    }
    step[k] = 0.0;
    for (uint32_t i = k - 1; i >= 1; i--)
        step[i] = (r[i] - (i + 1 < k ? up[i] * step[i + 1] : 0.0)) / di[i];

    /* Terminates: as t shrinks the boundaries approach the current, valid ones. */
    for (double t = 1.0;; t *= 0.5) {
        int ok = 1;
        for (uint32_t i = 1; i < k && ok; i++) {
            double prev = i == 1 ? 0.0 : b[i - 1] - t * step[i - 1];
            ok = b[i] - t * step[i] > prev && b[i] - t * step[i] < 1.0;
        }
        if (ok) {
            double largest = 0.0;
            for (uint32_t i = 1; i < k; i++) {
                s->b[i] -= t * step[i];
                largest = fmax(largest, fabs(t * step[i]));
            }
            return largest;
        }
    }
}

/* Fills a codebook's float tables (n = 2^bits entries) and its MSE. */
static void make_codebook(uint32_t g, uint32_t bits, float *centroids, float *boundaries,
                          float *centroid_sq, struct tkv_codebook *cb)
{
    uint32_t n = 1u << bits, k = n / 2u;
    double sigma = 1.0 / sqrt((double)g);
    struct half_solution s;

    /* Start from roughly the Gaussian Lloyd-Max spacing (1.0, 0.6, 0.35
     * standard deviations for b = 2, 3, 4); Lloyd keeps the order. */
    double spacing = (2.4 + 0.8 * bits) / n * sigma;
    for (uint32_t i = 0; i < k; i++)
        s.b[i] = i * spacing;
    s.b[k] = 1.0;
    for (int it = 0; it < LLOYD_WARMUP; it++) {
        half_centroids(g, k, &s);
        for (uint32_t i = 1; i < k; i++)
            s.b[i] = 0.5 * (s.c[i - 1] + s.c[i]);
    }
    half_centroids(g, k, &s);
    for (int it = 0; it < NEWTON_MAX && k > 1; it++) {
        double change = newton_step(k, &s);
        half_centroids(g, k, &s);
        if (change < NEWTON_DONE * sigma)
            break;
    }

    /* Per-coordinate distortion at the optimum: centroids are conditional
     * means, so E[(t - c(t))^2] = E[t^2] - sum_i P_i c_i^2 with E[t^2] = 1/g
     * (the coordinates of a unit vector have mean square 1/g). Per vector:
     * g times that (paper, Theorem 1: D_mse). */
    double total = s.at[k].mass, captured = 0.0;
    for (uint32_t i = 0; i < k; i++)
        captured += s.mass[i] / total * s.c[i] * s.c[i];

    for (uint32_t i = 0; i < k; i++) {
        centroids[k + i] = (float)s.c[i];
        centroids[k - 1 - i] = -(float)s.c[i];
    }
    for (uint32_t i = 0; i < n; i++)
        centroid_sq[i] = centroids[i] * centroids[i];
    for (uint32_t i = 0; i + 1 < n; i++)
        boundaries[i] = 0.5f * (centroids[i] + centroids[i + 1]);

    *cb = (struct tkv_codebook){
        .bits = bits,
        .n_levels = n,
        .centroids = centroids,
        .boundaries = boundaries,
        .centroid_sq = centroid_sq,
        .mse = 1.0 - (double)g * captured,
    };
}

/* ---- seeded rotations --------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The rotor rotation's matrices of group size g (turbokv_format.h, "Rotor
 * rotation"): per chunk of 3 a unit quaternion from four Box-Muller
 * normals, as a 3 x 3 rotation; a last chunk of 2 a planar rotation; a last
 * single coordinate the identity. */
static void make_rotors(uint64_t seed, uint32_t g, float *out)
{
    uint64_t state = seed ^ ((uint64_t)g * TKV_ROTOR_SEED_MUL);
    for (uint32_t c = 0; c < tkv_rotor_chunks(g); c++, out += 9) {
        uint32_t left = g - 3 * c;
        double m[9] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
        if (left >= 3) {
            double q[4], n = 0.0;
            for (int k = 0; k < 4; k += 2) {
                uint64_t z1 = splitmix64(&state), z2 = splitmix64(&state);
                double u1 = ((double)(z1 >> 11) + 1.0) * 0x1p-53, u2 = (double)(z2 >> 11) * 0x1p-53;
                double r = sqrt(-2.0 * log(u1));
                q[k] = r * cos(6.283185307179586 * u2);
                q[k + 1] = r * sin(6.283185307179586 * u2);
            }
            for (int k = 0; k < 4; k++)
                n += q[k] * q[k];
            n = sqrt(n);
            double w = q[0] / n, x = q[1] / n, y = q[2] / n, z = q[3] / n;
            double r[9] = { 1 - 2 * (y * y + z * z), 2 * (x * y - w * z),     2 * (x * z + w * y),
                            2 * (x * y + w * z),     1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                            2 * (x * z - w * y),     2 * (y * z + w * x),     1 - 2 * (x * x + y * y) };
            memcpy(m, r, sizeof m);
        } else if (left == 2) {
            uint64_t z1 = splitmix64(&state);
            splitmix64(&state);
            double a = 6.283185307179586 * (double)(z1 >> 11) * 0x1p-53;
            m[0] = cos(a);
            m[1] = -sin(a);
            m[3] = sin(a);
            m[4] = cos(a);
        }
        for (int k = 0; k < 9; k++)
            out[k] = (float)m[k];
    }
}

/* D1, D2 exactly as turbokv_format.h documents them. */
static void make_signs(uint64_t seed, uint32_t g, float *sign1, float *sign2)
{
    uint64_t state = seed ^ ((uint64_t)g * SIGN_SEED_MUL);
    for (uint32_t i = 0; i < g; i++)
        sign1[i] = (splitmix64(&state) >> 63) ? -1.0f : 1.0f;
    for (uint32_t i = 0; i < g; i++)
        sign2[i] = (splitmix64(&state) >> 63) ? -1.0f : 1.0f;
}

/*
 * A Haar-random orthogonal g x g matrix from the stream constant mul: the
 * dense rotation Q (TKV_ROTATION_DENSE, y = Q u; mul = DENSE_SEED_MUL =
 * 0xD1B54A32D192ED03) and the QJL sketch (mul = TKV_QJL_SEED_MUL):
 *   1. splitmix64 seeded with seed ^ (g * mul);
 *   2. g*g standard normals in row-major order, two per pair of outputs
 *      (z1, z2) by Box-Muller in double:
 *        u1 = ((z1 >> 11) + 1) * 2^-53 in (0, 1],  u2 = (z2 >> 11) * 2^-53,
 *        r = sqrt(-2 ln u1): r cos(2 pi u2), then r sin(2 pi u2);
 *   3. modified Gram-Schmidt over the rows in double, each row projected out
 *      against the previous ones twice ("twice is enough", Giraud et al.
 *      2005), then normalized;
 *   4. rounded to float.
 * Gaussian rows orthonormalized give a Haar-random orthogonal matrix, the
 * rotation of the paper's Algorithm 1. The rounding leaves |Q Q^T - I| at
 * float precision.
 */
static int haar_orthogonal(uint64_t seed, uint64_t mul, uint32_t g, float *out)
{
    double *q = malloc(sizeof *q * g * g);
    if (!q)
        return tkv_error(TKV_ENOMEM, "tables: no memory for a %ux%u orthogonal matrix", g, g);
    uint64_t state = seed ^ ((uint64_t)g * mul);
    const double two_pi = 6.283185307179586476925286766559;
    for (uint32_t i = 0; i < g * g; i += 2) {
        double u1 = (double)((splitmix64(&state) >> 11) + 1) * 0x1p-53;
        double u2 = (double)(splitmix64(&state) >> 11) * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        q[i] = r * cos(two_pi * u2);
        q[i + 1] = r * sin(two_pi * u2); /* g*g is even */
    }
    for (uint32_t i = 0; i < g; i++) {
        double *row = q + (size_t)i * g;
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t j = 0; j < i; j++) {
                const double *prev = q + (size_t)j * g;
                double dot = 0.0;
                for (uint32_t t = 0; t < g; t++)
                    dot += row[t] * prev[t];
                for (uint32_t t = 0; t < g; t++)
                    row[t] -= dot * prev[t];
            }
        double norm = 0.0;
        for (uint32_t t = 0; t < g; t++)
            norm += row[t] * row[t];
        norm = sqrt(norm);
        for (uint32_t t = 0; t < g; t++)
            row[t] /= norm;
    }
    for (uint32_t i = 0; i < g * g; i++)
        out[i] = (float)q[i];
    free(q);
    return TKV_OK;
}

/*
 * QJL sketch S for group size g (turbokv_format.h, "QJL key types"): a Haar
 * orthogonal matrix drawn as the dense rotation is, from its own stream.
 * Each row alone is uniform on the sphere, so E[s sign(<s, r>)] = m_g r/||r||
 * with m_g = E|t|, the mean absolute coordinate of a random unit vector, and
 * scale = 1/(g m_g) makes the residual estimate unbiased, as the paper's
 * i.i.d. Gaussian S does (Definition 1, Theorem 2). Orthogonal rows give
 * ||S^T z||^2 = g for every sign vector z, which lowers the error of the
 * estimate (orthogonal random features, Yu et al., NeurIPS 2016), and no row
 * norms to scatter from one fixed draw to the next.
 * For even g, m_g = Gamma(g/2) / (sqrt(pi) Gamma((g+1)/2))
 *             = (2/pi) prod_{k = 2, 4, .., g-2} k / (k+1),
 * from m_2 = 2/pi and m_{g+2} = m_g g/(g+1) (Gamma(x+1) = x Gamma(x)).
 */
static int make_qjl(uint64_t seed, uint32_t g, float *rows, struct tkv_qjl_tables *out)
{
    int rc = haar_orthogonal(seed, TKV_QJL_SEED_MUL, g, rows);
    double mean_abs = 2.0 / 3.14159265358979323846;
    for (uint32_t k = 2; k + 2 <= g; k += 2)
        mean_abs *= (double)k / (k + 1);
    *out = (struct tkv_qjl_tables){ .rows = rows, .scale = (float)(1.0 / (g * mean_abs)) };
    return rc;
}

/* ---- identity ----------------------------------------------------------- */

/* FNV-1a 64 over the IEEE bit patterns of floats, each as 4 little-endian
 * bytes (the same id on every host byte order). */
static uint64_t fnv1a_floats(uint64_t h, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        for (int byte = 0; byte < 4; byte++) {
            h ^= (bits >> (8 * byte)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

/* ---- assembly ----------------------------------------------------------- */

/* One allocation per seed: the struct, then every float table. */
struct tables_block {
    struct tkv_math math;
    struct tables_block *next;
    float data[];
};

static size_t floats_per_group(uint32_t g)
{
    size_t n = 2u * g + 2u * (size_t)g * g; /* signs, dense, QJL */
    for (uint32_t bits = TKV_TURBO_BITS_MIN; bits <= TKV_TURBO_BITS_MAX; bits++)
        n += 3u * (1u << bits) - 1u; /* centroids, centroid_sq, boundaries */
    return n;
}

/*
 * tables_id hashes, for g = 8, 16, .., 128 in turn: for b = 2, 3, 4 the
 * centroids then the boundaries, then D1, D2 and the dense matrix; after
 * every group size, the QJL rows for g = 8 .. 128. The centroid squares and
 * the QJL scales derive from those and are not hashed.
 */
/* The QJL sketches depend only on the seed: they are computed on a second
 * thread while the first computes the codebooks and dense rotations (the
 * Gram-Schmidt of the g = 128 matrices is most of a context's first open). */
struct qjl_job {
    uint64_t seed;
    float *rows;            /* where the sketches go, group after group */
    struct tkv_qjl_tables *out;
    int rc;
};

static void *qjl_job_run(void *arg)
{
    struct qjl_job *j = arg;
    float *p = j->rows;
    j->rc = TKV_OK;
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX && j->rc == TKV_OK; g <<= 1) {
        j->rc = make_qjl(j->seed, g, p, &j->out[tkv_group_index(g)]);
        p += (size_t)g * g;
    }
    return NULL;
}

/* Out of line: its floating-point work must not move across the
 * environment's register accesses in tkv_tables_get. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static struct tables_block *compute_tables(uint64_t seed)
{
    size_t n_floats = 0;
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1)
        n_floats += floats_per_group(g) + 9u * tkv_rotor_chunks(g);
    struct tables_block *t = calloc(1, sizeof *t + n_floats * sizeof(float));
    if (!t) {
        tkv_error(TKV_ENOMEM, "tables: no memory for the codebooks and rotations (%zu bytes)",
                  sizeof *t + n_floats * sizeof(float));
        return NULL;
    }
    t->math.struct_size = sizeof t->math;
    t->math.rotation_seed = seed;

    uint64_t id = 0xcbf29ce484222325ull;
    float *p = t->data;
    /* the sketches live after every group's codebooks, signs and dense matrix */
    size_t before_qjl = 0;
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1)
        before_qjl += floats_per_group(g) - (size_t)g * g;
    struct qjl_job job = { .seed = seed, .rows = t->data + before_qjl, .out = t->math.qjl };
    pthread_t worker;
    int threaded = pthread_create(&worker, NULL, qjl_job_run, &job) == 0;
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        struct tkv_group_tables *gt = &t->math.groups[tkv_group_index(g)];
        gt->group = g;
        for (uint32_t bits = TKV_TURBO_BITS_MIN; bits <= TKV_TURBO_BITS_MAX; bits++) {
            uint32_t n = 1u << bits;
            float *centroids = p, *centroid_sq = p + n, *boundaries = p + 2 * n;
            p += 3 * n - 1;
            make_codebook(g, bits, centroids, boundaries, centroid_sq,
                          &gt->codebook[bits - TKV_TURBO_BITS_MIN]);
            id = fnv1a_floats(id, centroids, n);
            id = fnv1a_floats(id, boundaries, n - 1);
        }
        float *sign1 = p, *sign2 = p + g, *dense = p + 2 * g;
        p += 2 * g + (size_t)g * g;
        make_signs(seed, g, sign1, sign2);
        if (haar_orthogonal(seed, DENSE_SEED_MUL, g, dense) != TKV_OK) {
            if (threaded)
                pthread_join(worker, NULL);
            free(t);
            return NULL;
        }
        gt->sign1 = sign1;
        gt->sign2 = sign2;
        gt->dense = dense;
        id = fnv1a_floats(id, sign1, g);
        id = fnv1a_floats(id, sign2, g);
        id = fnv1a_floats(id, dense, (size_t)g * g);
    }
    if (threaded)
        pthread_join(worker, NULL);
    else
        qjl_job_run(&job);
    if (job.rc != TKV_OK || p != job.rows) {
        /* the worker's detail is its own thread's: say it here */
        tkv_error(job.rc == TKV_OK ? TKV_EINVAL : job.rc, "tables: %s computing the QJL sketches",
                  job.rc == TKV_OK ? "layout mismatch" : "out of memory");
        free(t);
        return NULL;
    }
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        id = fnv1a_floats(id, p, (size_t)g * g);
        p += (size_t)g * g;
    }
    t->math.tables_id = id;
    /* format revision 1, after every hashed table (tables_id stays what files recorded) */
    for (uint32_t g = TKV_GROUP_MIN; g <= TKV_GROUP_MAX; g <<= 1) {
        make_rotors(seed, g, p);
        t->math.rotor[tkv_group_index(g)] = p;
        p += 9u * tkv_rotor_chunks(g);
    }
    return t;
}

/* Tables computed so far, one per seed; kept until process exit. */
static pthread_mutex_t tables_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tables_block *tables_list;

const struct tkv_math *tkv_tables_get(uint64_t seed)
{
    pthread_mutex_lock(&tables_lock);
    struct tables_block *t = tables_list;
    while (t && t->math.rotation_seed != seed)
        t = t->next;
    if (!t) {
        /* in the environment the rules assume, whatever the host's thread
         * runs in (turbokv_fpenv.h); the sketch worker inherits it */
        tkv_fpenv fp = tkv_fpenv_enter();
        t = compute_tables(seed);
        tkv_fpenv_leave(fp);
        if (t) {
            t->next = tables_list;
            tables_list = t;
        }
    }
    pthread_mutex_unlock(&tables_lock);
    return t ? &t->math : NULL;
}
