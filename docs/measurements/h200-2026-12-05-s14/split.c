#include <math.h>
#include <stdio.h>
#include <stdlib.h>
static double gauss(void) { double u = (rand() + 1.0) / (RAND_MAX + 2.0), v = (rand() + 1.0) / (RAND_MAX + 2.0); return sqrt(-2 * log(u)) * cos(2 * M_PI * v); }
int main(void)
{
    const int D = 128, N = 200000;
    const double lm[8] = { -2.1520, -1.3440, -0.7560, -0.2451, 0.2451, 0.7560, 1.3440, 2.1520 };
    float c[8]; _Float16 ch[8], cl[8];
    for (int i = 0; i < 8; i++) { c[i] = (float)(lm[i] / sqrt(D)); ch[i] = (_Float16)c[i]; cl[i] = (_Float16)(c[i] - (float)ch[i]); }
    double worst_fma = 0, worst_split = 0, worst_hi = 0, sum_fma = 0, sum_split = 0;
    for (int n = 0; n < N; n++) {
        float q[128]; int idx[128];
        for (int e = 0; e < D; e++) { q[e] = (float)gauss(); idx[e] = rand() & 7; }
        double ref = 0, mag = 0;
        for (int e = 0; e < D; e++) { ref += (double)q[e] * c[idx[e]]; mag += fabs((double)q[e] * c[idx[e]]); }
        float f = 0, s = 0, h = 0;
        for (int e = 0; e < D; e++) f = fmaf(q[e], c[idx[e]], f);
        /* split: 8 partial sums of 16 (tensor-core k-steps), products exact in fp32 */
        for (int k = 0; k < D; k += 16) {
            float part = 0, parth = 0;
            for (int e = k; e < k + 16; e++) {
                _Float16 qh = (_Float16)q[e], ql = (_Float16)(q[e] - (float)qh);
                part += (float)qh * (float)ch[idx[e]] + ((float)qh * (float)cl[idx[e]] + (float)ql * (float)ch[idx[e]]);
                parth += (float)qh * (float)ch[idx[e]];
            }
            s += part; h += parth;
        }
        double ef = fabs(f - ref) / mag, es = fabs(s - ref) / mag, eh = fabs(h - ref) / mag;
        worst_fma = ef > worst_fma ? ef : worst_fma; worst_split = es > worst_split ? es : worst_split;
        worst_hi = eh > worst_hi ? eh : worst_hi; sum_fma += ef; sum_split += es;
    }
    printf("relative to sum|q_e c_e|, %d rows of %d: fp32 fma worst %.2e mean %.2e; 3-product fp16 split worst %.2e mean %.2e; fp16 only worst %.2e\n",
           N, D, worst_fma, sum_fma / N, worst_split, sum_split / N, worst_hi);
    return 0;
}
