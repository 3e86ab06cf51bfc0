// Fused GroupNorm for channels-last tensors on the CPU, with a per-sample affine map and an
// optional SiLU:
//
//   y[n, p, c] = drop(act(xhat[n, p, c] * scale[n, c] + offset[n, c])),
//   xhat = (x - mean[n, g]) * rstd[n, g],  rstd = 1 / sqrt(var[n, g] + epsilon),
//
// where g = c / (C / groups) and mean/var are taken over the pixels p and the channels of the
// group. `scale`/`offset` are [N, C] so that a plain GroupNorm (gamma, beta broadcast over the
// batch) and the scale-shift conditioning of Improved DDPM (gamma * (1 + s), beta * (1 + s) + b)
// are the same kernel. `drop` is inverted dropout at rate `dropout` (0: none): an element is kept,
// and scaled by 1 / (1 - dropout), when a hash of (key, first_row + n, p * C + c) is at least
// dropout * 2^32, with seed = (key, salt, first_row); ddpm_tf/dropout.py computes the same mask
// with TensorFlow ops. The gradient recomputes the mask from the seed instead of storing it. TensorFlow computes this as a chain of reductions and element-wise
// kernels, each a pass over the activation; here the forward pass reads x three times and writes
// y once, and the gradient reads (dy, x) once and (x, the saved gradient) once.
//
// Work is split by sample; each sample's arithmetic runs in a fixed order on one thread, so the
// results do not depend on the number of threads (bit-reproducible). Statistics are in float32
// with float64 block totals; x, y, dy and dx may be float32, bfloat16 or float16.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace ddpm_tf {
namespace {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

constexpr int64_t kBlock = 256;  // pixels summed in float32 before adding to a float64 total

// Sizes of one call: batch, pixels per sample, channels, groups, channels per group.
struct Dims {
  int64_t n, p, c, g, cg;
};

template <typename T>
inline float ToFloat(T v) {
  return static_cast<float>(v);
}

// Per-channel sums over the pixels of one sample of f(x[p, c], c), in blocks of kBlock pixels.
template <typename T, typename F>
void ChannelSums(const T* x, const Dims& d, F f, std::vector<double>* total,
                 std::vector<float>* block) {
  total->assign(d.c, 0.0);
  for (int64_t p0 = 0; p0 < d.p; p0 += kBlock) {
    block->assign(d.c, 0.0f);
    float* acc = block->data();
    const int64_t p1 = std::min(d.p, p0 + kBlock);
    for (int64_t p = p0; p < p1; ++p) {
      const T* row = x + p * d.c;
      for (int64_t c = 0; c < d.c; ++c) acc[c] += f(ToFloat(row[c]), c);
    }
    for (int64_t c = 0; c < d.c; ++c) (*total)[c] += acc[c];
  }
}

// Per group: the sum of `per_channel` over the group's channels, divided by `count`.
void GroupAverage(const std::vector<double>& per_channel, const Dims& d, double count,
                  std::vector<double>* per_group) {
  per_group->assign(d.g, 0.0);
  for (int64_t c = 0; c < d.c; ++c) (*per_group)[c / d.cg] += per_channel[c];
  for (double& v : *per_group) v /= count;
}

inline float Sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

// A 32-bit bijection with full avalanche (xor-shift-multiply; constants of "lowbias32").
inline uint32_t Mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// Inverted dropout's mask: factor(j) is 0 or 1 / (1 - rate) for element j = p * C + c of the
// sample in global row first_row + n, from a counter-based hash of (key, salt, row, j), so any
// thread can recompute it. seed = (key, salt, first_row); key and salt are uint32 values.
struct DropoutMask {
  bool on = false;
  uint32_t threshold = 0;  // keep iff hash >= threshold (probability 1 - threshold / 2^32)
  float scale = 1.0f;
  uint32_t key = 0;     // the layer's key for this step
  uint32_t sample = 0;  // from the salt and the global row

  DropoutMask(float rate, const int64_t* seed, int64_t n) {
    if (rate <= 0.0f) return;
    on = true;
    threshold = static_cast<uint32_t>(std::min(4294967295.0, std::round(rate * 4294967296.0)));
    scale = 1.0f / (1.0f - rate);
    key = static_cast<uint32_t>(seed[0]);
    sample = Mix32(static_cast<uint32_t>(seed[1]) ^ Mix32(static_cast<uint32_t>(seed[2] + n)));
  }
  inline float Factor(uint32_t j) const {
    return Mix32(Mix32(j ^ key) ^ sample) >= threshold ? scale : 0.0f;
  }
};

// Calls f(silu, drop) with both as compile-time constants (std::bool_constant), so that each
// row loop below is compiled branch-free and vectorised for its case.
template <typename F>
void Dispatch(bool silu, bool drop, F f) {
  if (silu) {
    drop ? f(std::true_type{}, std::true_type{}) : f(std::true_type{}, std::false_type{});
  } else {
    drop ? f(std::false_type{}, std::true_type{}) : f(std::false_type{}, std::false_type{});
  }
}

// out[c] = drop(act(x[c] * a[c] + b[c])) for one pixel's C channels.
template <bool kSilu, bool kDrop, typename T>
inline void ForwardRow(const T* __restrict x, const float* __restrict a, const float* __restrict b,
                       T* __restrict out, int64_t channels, uint32_t j0,
                       const DropoutMask& drop) {
  for (int64_t c = 0; c < channels; ++c) {
    float v = ToFloat(x[c]) * a[c] + b[c];
    if constexpr (kSilu) v *= Sigmoid(v);
    if constexpr (kDrop) v *= drop.Factor(j0 + static_cast<uint32_t>(c));
    out[c] = static_cast<T>(v);
  }
}

// For one pixel: work[c] = the gradient at the affine output (through dropout and SiLU), and
// the running per-channel sums of work * xhat (-> dscale) and work (-> doffset).
template <bool kSilu, bool kDrop, typename T>
inline void BackwardRow(const T* __restrict x, const T* __restrict dy, const float* __restrict m,
                        const float* __restrict r, const float* __restrict scale,
                        const float* __restrict offset, float* __restrict work,
                        float* __restrict ds, float* __restrict db, int64_t channels, uint32_t j0,
                        const DropoutMask& drop) {
  for (int64_t c = 0; c < channels; ++c) {
    const float xhat = (ToFloat(x[c]) - m[c]) * r[c];
    float g = ToFloat(dy[c]);
    if constexpr (kDrop) g *= drop.Factor(j0 + static_cast<uint32_t>(c));
    if constexpr (kSilu) {
      const float v = xhat * scale[c] + offset[c];
      const float sig = Sigmoid(v);
      g *= sig * (1.0f + v * (1.0f - sig));
    }
    work[c] = g;
    ds[c] += g * xhat;
    db[c] += g;
  }
}

template <typename T>
void ForwardSample(const T* x, const float* scale, const float* offset, T* y, float* mean,
                   float* rstd, const Dims& d, float epsilon, bool silu, const DropoutMask& drop) {
  std::vector<double> total, group;
  std::vector<float> block, channel_mean(d.c), a(d.c), b(d.c);
  const double count = static_cast<double>(d.p * d.cg);

  ChannelSums(x, d, [](float v, int64_t) { return v; }, &total, &block);
  GroupAverage(total, d, count, &group);
  for (int64_t g = 0; g < d.g; ++g) mean[g] = static_cast<float>(group[g]);
  for (int64_t c = 0; c < d.c; ++c) channel_mean[c] = mean[c / d.cg];

  const float* m = channel_mean.data();
  ChannelSums(
      x, d,
      [m](float v, int64_t c) {
        const float e = v - m[c];
        return e * e;
      },
      &total, &block);
  GroupAverage(total, d, count, &group);
  for (int64_t g = 0; g < d.g; ++g) {
    rstd[g] = static_cast<float>(1.0 / std::sqrt(group[g] + static_cast<double>(epsilon)));
  }
  // y = x * a + b with a = rstd * scale, b = offset - mean * a.
  for (int64_t c = 0; c < d.c; ++c) {
    a[c] = rstd[c / d.cg] * scale[c];
    b[c] = offset[c] - m[c] * a[c];
  }
  const float* pa = a.data();
  const float* pb = b.data();
  Dispatch(silu, drop.on, [&](auto act, auto dropped) {
    for (int64_t p = 0; p < d.p; ++p) {
      ForwardRow<decltype(act)::value, decltype(dropped)::value>(
          x + p * d.c, pa, pb, y + p * d.c, d.c, static_cast<uint32_t>(p * d.c), drop);
    }
  });
}

// Gradient of one sample. `work` holds P * C floats (the gradient at the affine output).
template <typename T>
void BackwardSample(const T* dy, const T* x, const float* scale, const float* offset,
                    const float* mean, const float* rstd, T* dx, float* dscale, float* doffset,
                    float* work, const Dims& d, bool silu, const DropoutMask& drop) {
  std::vector<float> m(d.c), r(d.c), ds(d.c), db(d.c);
  for (int64_t c = 0; c < d.c; ++c) {
    m[c] = mean[c / d.cg];
    r[c] = rstd[c / d.cg];
  }
  std::vector<double> ds_total(d.c, 0.0), db_total(d.c, 0.0);
  for (int64_t p0 = 0; p0 < d.p; p0 += kBlock) {
    std::fill(ds.begin(), ds.end(), 0.0f);
    std::fill(db.begin(), db.end(), 0.0f);
    const int64_t p1 = std::min(d.p, p0 + kBlock);
    Dispatch(silu, drop.on, [&](auto act, auto dropped) {
      for (int64_t p = p0; p < p1; ++p) {
        BackwardRow<decltype(act)::value, decltype(dropped)::value>(
            x + p * d.c, dy + p * d.c, m.data(), r.data(), scale, offset, work + p * d.c,
            ds.data(), db.data(), d.c, static_cast<uint32_t>(p * d.c), drop);
      }
    });
    for (int64_t c = 0; c < d.c; ++c) {
      ds_total[c] += ds[c];
      db_total[c] += db[c];
    }
  }
  // With h = g * scale the gradient at xhat, dx = rstd * (h - mean(h) - xhat * mean(h * xhat))
  // over the group, and sum(h) = sum_c scale[c] * doffset[c], sum(h * xhat) = sum_c scale[c] *
  // dscale[c]. Written as dx = g * a + x * b + k per channel.
  std::vector<double> sum_h(d.g, 0.0), sum_hx(d.g, 0.0);
  for (int64_t c = 0; c < d.c; ++c) {
    dscale[c] = static_cast<float>(ds_total[c]);
    doffset[c] = static_cast<float>(db_total[c]);
    sum_h[c / d.cg] += scale[c] * db_total[c];
    sum_hx[c / d.cg] += scale[c] * ds_total[c];
  }
  const double count = static_cast<double>(d.p * d.cg);
  std::vector<float> a(d.c), b(d.c), k(d.c);
  for (int64_t c = 0; c < d.c; ++c) {
    const double rc = r[c];
    const double mh = sum_h[c / d.cg] / count;
    const double mhx = sum_hx[c / d.cg] / count;
    a[c] = static_cast<float>(rc * scale[c]);
    b[c] = static_cast<float>(-rc * rc * mhx);
    k[c] = static_cast<float>(-rc * mh + m[c] * rc * rc * mhx);
  }
  const float* pa = a.data();
  const float* pb = b.data();
  const float* pk = k.data();
  for (int64_t p = 0; p < d.p; ++p) {
    const T* xr = x + p * d.c;
    const float* wr = work + p * d.c;
    T* out = dx + p * d.c;
    for (int64_t c = 0; c < d.c; ++c) {
      out[c] = static_cast<T>(wr[c] * pa[c] + ToFloat(xr[c]) * pb[c] + pk[c]);
    }
  }
}

// Checks x ([N, ..., C], rank >= 2) and the [N, C] inputs, and fills in the sizes.
absl::Status CheckInputs(const Tensor& x, const Tensor& scale, const Tensor& offset,
                         int64_t groups, Dims* d) {
  if (x.dims() < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DdpmGroupNorm: x must be [batch, ..., channels], got shape ", x.shape().DebugString()));
  }
  d->n = x.dim_size(0);
  d->c = x.dim_size(x.dims() - 1);
  d->g = groups;
  d->p = d->n * d->c == 0 ? 0 : x.NumElements() / (d->n * d->c);
  if (d->c % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DdpmGroupNorm: groups=", groups, " does not divide the ", d->c, " channels of x"));
  }
  d->cg = d->c / groups;
  if (d->p * d->c > 4294967295LL) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DdpmGroupNorm: a sample of x has ", d->p * d->c, " elements; at most 2^32 - 1 are "
        "supported"));
  }
  const TensorShape per_channel({d->n, d->c});
  if (scale.shape() != per_channel || offset.shape() != per_channel) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DdpmGroupNorm: scale and offset must be [batch, channels] = ", per_channel.DebugString(),
        ", got ", scale.shape().DebugString(), " and ", offset.shape().DebugString()));
  }
  return absl::OkStatus();
}

// Runs fn(sample) for every sample on the intra-op thread pool.
template <typename F>
void ForEachSample(OpKernelContext* ctx, const Dims& d, F fn) {
  const auto& threads = *ctx->device()->tensorflow_cpu_worker_threads();
  const int64_t cost = std::max<int64_t>(1, d.p * d.c * 30);
  ::tensorflow::Shard(threads.num_threads, threads.workers, d.n, cost,
                      [&fn](int64_t begin, int64_t end) {
                        for (int64_t n = begin; n < end; ++n) fn(n);
                      });
}

// The attributes both ops share, read and checked once, and the checks of their common inputs.
class GroupNormKernelBase : public OpKernel {
 public:
  explicit GroupNormKernelBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("silu", &silu_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dropout", &dropout_));
    OP_REQUIRES(ctx, dropout_ >= 0.0f && dropout_ < 1.0f,
                absl::InvalidArgumentError(
                    absl::StrCat("DdpmGroupNorm: dropout must be in [0, 1), got ", dropout_)));
  }

 protected:
  // Checks x, scale, offset and seed, fills in the sizes and returns the seed's three words.
  absl::Status Check(const Tensor& x, const Tensor& scale, const Tensor& offset,
                     const Tensor& seed, Dims* d, const int64_t** seed_words) const {
    TF_RETURN_IF_ERROR(CheckInputs(x, scale, offset, groups_, d));
    if (seed.shape() != TensorShape({3})) {
      return absl::InvalidArgumentError(absl::StrCat(
          "DdpmGroupNorm: seed must be [3] int64 (key, salt, first row), got ",
          seed.shape().DebugString()));
    }
    *seed_words = seed.flat<int64_t>().data();
    return absl::OkStatus();
  }

  int64_t groups_;
  bool silu_;
  float dropout_;
};

template <typename T>
class GroupNormOp : public GroupNormKernelBase {
 public:
  explicit GroupNormOp(OpKernelConstruction* ctx) : GroupNormKernelBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& scale = ctx->input(1);
    const Tensor& offset = ctx->input(2);
    Dims d;
    const int64_t* pseed;
    OP_REQUIRES_OK(ctx, Check(x, scale, offset, ctx->input(3), &d, &pseed));
    Tensor *y, *mean, *rstd;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({d.n, d.g}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({d.n, d.g}), &rstd));
    const T* px = x.flat<T>().data();
    const float* ps = scale.flat<float>().data();
    const float* po = offset.flat<float>().data();
    T* py = y->flat<T>().data();
    float* pm = mean->flat<float>().data();
    float* pr = rstd->flat<float>().data();
    const int64_t size = d.p * d.c;
    ForEachSample(ctx, d, [&](int64_t n) {
      ForwardSample(px + n * size, ps + n * d.c, po + n * d.c, py + n * size, pm + n * d.g,
                    pr + n * d.g, d, epsilon_, silu_, DropoutMask(dropout_, pseed, n));
    });
  }

 private:
  float epsilon_;
};

template <typename T>
class GroupNormGradOp : public GroupNormKernelBase {
 public:
  explicit GroupNormGradOp(OpKernelConstruction* ctx) : GroupNormKernelBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& dy = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& scale = ctx->input(2);
    const Tensor& offset = ctx->input(3);
    const Tensor& mean = ctx->input(4);
    const Tensor& rstd = ctx->input(5);
    Dims d;
    const int64_t* pseed;
    OP_REQUIRES_OK(ctx, Check(x, scale, offset, ctx->input(6), &d, &pseed));
    const TensorShape stats({d.n, d.g});
    OP_REQUIRES(ctx, dy.shape() == x.shape() && mean.shape() == stats && rstd.shape() == stats,
                absl::InvalidArgumentError("DdpmGroupNormGrad: dy, mean or rstd has the wrong "
                                           "shape for x"));
    Tensor *dx, *dscale, *doffset;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scale.shape(), &dscale));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, offset.shape(), &doffset));
    const int64_t size = d.p * d.c;
    const T* pdy = dy.flat<T>().data();
    const T* px = x.flat<T>().data();
    const float* ps = scale.flat<float>().data();
    const float* po = offset.flat<float>().data();
    const float* pm = mean.flat<float>().data();
    const float* pr = rstd.flat<float>().data();
    T* pdx = dx->flat<T>().data();
    float* pds = dscale->flat<float>().data();
    float* pdo = doffset->flat<float>().data();
    ForEachSample(ctx, d, [&](int64_t n) {
      // float32 gradients go through dx itself; 16-bit ones through a float32 buffer.
      std::vector<float> buffer;
      float* work;
      if constexpr (std::is_same_v<T, float>) {
        work = pdx + n * size;
      } else {
        buffer.resize(size);
        work = buffer.data();
      }
      BackwardSample(pdy + n * size, px + n * size, ps + n * d.c, po + n * d.c, pm + n * d.g,
                     pr + n * d.g, pdx + n * size, pds + n * d.c, pdo + n * d.c, work, d, silu_,
                     DropoutMask(dropout_, pseed, n));
    });
  }
};

absl::Status GroupNormShape(InferenceContext* c) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &x));
  int64_t groups;
  TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
  c->set_output(0, x);
  const ShapeHandle stats = c->Matrix(c->Dim(x, 0), groups);
  c->set_output(1, stats);
  c->set_output(2, stats);
  return absl::OkStatus();
}

absl::Status GroupNormGradShape(InferenceContext* c) {
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  c->set_output(2, c->input(3));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("DdpmGroupNorm")
    .Input("x: T")
    .Input("scale: float")
    .Input("offset: float")
    .Input("seed: int64")
    .Output("y: T")
    .Output("mean: float")
    .Output("rstd: float")
    .Attr("T: {float, bfloat16, half}")
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Attr("silu: bool")
    .Attr("dropout: float = 0.0")
    .SetShapeFn(GroupNormShape);

REGISTER_OP("DdpmGroupNormGrad")
    .Input("dy: T")
    .Input("x: T")
    .Input("scale: float")
    .Input("offset: float")
    .Input("mean: float")
    .Input("rstd: float")
    .Input("seed: int64")
    .Output("dx: T")
    .Output("dscale: float")
    .Output("doffset: float")
    .Attr("T: {float, bfloat16, half}")
    .Attr("groups: int >= 1")
    .Attr("silu: bool")
    .Attr("dropout: float = 0.0")
    .SetShapeFn(GroupNormGradShape);

#define DDPM_REGISTER(T)                                                                  \
  REGISTER_KERNEL_BUILDER(                                                                \
      Name("DdpmGroupNorm").Device(DEVICE_CPU).TypeConstraint<T>("T"), GroupNormOp<T>); \
  REGISTER_KERNEL_BUILDER(Name("DdpmGroupNormGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"), \
                          GroupNormGradOp<T>);

DDPM_REGISTER(float)
DDPM_REGISTER(::tensorflow::bfloat16)
DDPM_REGISTER(Eigen::half)

}  // namespace ddpm_tf
