/* SPDX-License-Identifier: MIT */
// Correctly rounded arithmetic where the reference (plugins/cpu) gets it from
// IEEE hardware and Vulkan promises less: OpFDiv may be off by 2.5 ulp, and
// float64 operations need only be as precise as float32 ones. Each result is
// repaired with exact residuals, so a device that rounds correctly already
// pays a few operations and one that does not still matches the reference
// bit for bit. Only products, sums and comparisons are trusted: those are
// correctly rounded on every Vulkan device.
//
// Without shaderFloat64 (TKV_FP64 0) the sums the reference keeps in double
// are kept in float; the plugin logs that stored scales may then differ
// from the reference in their last bits.

// The float next to q towards +inf (up) or -inf.
float float_step(float q, bool up)
{
    uint u = floatBitsToUint(q);
    if ((u & 0x7fffffffu) == 0u)
        return uintBitsToFloat(up ? 1u : 0x80000001u);
    return uintBitsToFloat((q > 0.0) == up ? u + 1u : u - 1u);
}

#if TKV_FP64

// a / b rounded to nearest even. The residual a - q b is exact in double:
// the product of two floats has 48 bits, and q b is within a few ulp of a.
float div_rn(float a, float b)
{
    float q = a / b;
    precise double r = double(a) - double(q) * double(b);
    for (int step = 0; step < 4 && r != 0.0lf; step++) {
        float n = float_step(q, (r > 0.0lf) == (b > 0.0));
        precise double rn = double(a) - double(n) * double(b);
        // a quotient of floats is never exactly halfway between two normal
        // floats, but among subnormals it can be: ties go to the even one
        if (abs(rn) > abs(r) || (abs(rn) == abs(r) && (floatBitsToUint(n) & 1u) != 0u))
            break;
        q = n;
        r = rn;
    }
    return q;
}

// double -> float, round to nearest even, with integer operations (OpFConvert
// leaves the rounding to the implementation).
float f32_from_f64(double d)
{
    uint64_t u = doubleBitsToUint64(d);
    uint sign = uint(u >> 32) & 0x80000000u;
    int e = int((u >> 52) & 0x7fful);
    if (e == 0x7ff)
        return uintBitsToFloat(sign | 0x7f800000u | ((u & 0xffffffffffffful) != 0ul ? 0x400000u : 0u));
    if (e == 0)
        return uintBitsToFloat(sign); // a double subnormal is far below the float range
    int fe = e - 1023 + 127;
    if (fe >= 255)
        return uintBitsToFloat(sign | 0x7f800000u);
    uint64_t m = (u & 0xffffffffffffful) | (1ul << 52);
    int shift = 29 + (fe < 1 ? 1 - fe : 0);
    if (shift > 53)
        return uintBitsToFloat(sign);
    uint64_t q = m >> shift, rem = m & ((1ul << shift) - 1ul), half_ = 1ul << (shift - 1);
    if (rem > half_ || (rem == half_ && (q & 1ul) != 0ul))
        q++;
    // the carry of a rounded-up significand moves into the exponent
    return uintBitsToFloat(sign | (fe < 1 ? uint(q) : uint((uint64_t(fe - 1) << 23) + q)));
}

// a - b c with b c exact (Dekker's product: Veltkamp splits, no fma needed).
double residual(double a, double b, double c)
{
    precise double sb = 134217729.0lf * b, bh = sb - (sb - b), bl = b - bh;
    precise double sc = 134217729.0lf * c, ch = sc - (sc - c), cl = c - ch;
    precise double p = b * c;
    precise double e = ((bh * ch - p) + bh * cl + bl * ch) + bl * cl;
    precise double r = (a - p) - e;
    return r;
}

double double_step(double x, bool up)
{
    uint64_t u = doubleBitsToUint64(x); // x > 0 here
    return uint64BitsToDouble(up ? u + 1ul : u - 1ul);
}

// The walks below end at the double of least |residual| (the correctly
// rounded result) from a start within a few ulp of it; |residual| falls
// towards it from both sides, so a start nearer to it ends at the same
// double. A start is that near when its residual is below
// NEAR_ULPS (2^-52 a): then it is within 2 ulp. A device result farther off
// (float64 operations that are only float-accurate) is first brought there
// by two Newton steps on the exact residual.
const double NEAR_ULPS = 2.220446049250313e-16lf; // 2^-52
const int WALK_STEPS = 4;

// sqrt(a) correctly rounded, a > 0 finite.
double sqrt_rn(double a)
{
    precise double s = sqrt(a);
    double r = residual(a, s, s);
    if (!(abs(r) <= a * NEAR_ULPS)) {
        for (int k = 0; k < 2; k++)
            s = s + residual(a, s, s) / (2.0lf * s);
        r = residual(a, s, s);
    }
    for (int k = 0; k < WALK_STEPS && r != 0.0lf; k++) {
        double n = double_step(s, r > 0.0lf);
        double rn = residual(a, n, n);
        if (abs(rn) >= abs(r))
            break;
        s = n;
        r = rn;
    }
    return s;
}

// a / b correctly rounded, a >= 0, b > 0, both finite.
double div_rn64(double a, double b)
{
    precise double q = a / b;
    double r = residual(a, q, b);
    if (!(abs(r) <= a * NEAR_ULPS)) {
        for (int k = 0; k < 2; k++)
            q = q + residual(a, q, b) / b;
        r = residual(a, q, b);
    }
    for (int k = 0; k < WALK_STEPS && r != 0.0lf; k++) {
        double n = double_step(q, r > 0.0lf);
        double rn = residual(a, n, b);
        if (abs(rn) > abs(r) || (abs(rn) == abs(r) && (doubleBitsToUint64(n) & 1ul) != 0ul))
            break;
        q = n;
        r = rn;
    }
    return q;
}

#define SUM_T double
#define TO_SUM(x) double(x)
// (float)sqrt(sum), as the reference rounds it: in double, then to float
float sqrt_to_float(double sum) { return sum > 0.0lf ? f32_from_f64(sqrt_rn(sum)) : 0.0; }
// (float)(num / sqrt(sum))
float div_sqrt_to_float(float num, double sum) { return f32_from_f64(div_rn64(double(num), sqrt_rn(sum))); }

#else

float div_rn(float a, float b) { return a / b; }

#define SUM_T float
#define TO_SUM(x) float(x)
float sqrt_to_float(float sum) { return sqrt(sum); }
float div_sqrt_to_float(float num, float sum) { return num / sqrt(sum); }

#endif
