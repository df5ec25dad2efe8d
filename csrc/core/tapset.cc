// Core (framework-free C++17): tap sets from mask parameters or from a kernel's non-zeros.
#include "tapset.h"

#include <algorithm>
#include <cctype>
#include <climits>

namespace pcf {

int64_t TapSet::live_macs_per_pixel() const {
  int64_t total = 0;
  for (size_t i = 0; i < lo.size(); ++i) total += std::max<int64_t>(0, hi[i] - lo[i]);
  return total;
}

void TapSet::transposed_ranges(std::vector<int32_t>* rlo, std::vector<int32_t>* rhi) const {
  const int T = num_taps();
  rlo->assign(int64_t(T) * cin, INT32_MAX);
  rhi->assign(int64_t(T) * cin, 0);
  for (int t = 0; t < T; ++t)
    for (int64_t o = 0; o < cout; ++o)
      for (int32_t ci = lo[t * cout + o]; ci < hi[t * cout + o]; ++ci) {
        int32_t& l = (*rlo)[t * cin + ci];
        int32_t& h = (*rhi)[t * cin + ci];
        l = std::min<int32_t>(l, static_cast<int32_t>(o));
        h = std::max<int32_t>(h, static_cast<int32_t>(o + 1));
      }
  for (auto& l : *rlo)
    if (l == INT32_MAX) l = 0;
}

void TapSet::add_tap(int y, int x, const std::vector<int32_t>& tap_lo, const std::vector<int32_t>& tap_hi) {
  bool any = false;
  for (int64_t o = 0; o < cout; ++o) any = any || tap_hi[o] > tap_lo[o];
  if (!any) return;  // a dead tap is not listed, so nothing ever reads it
  ky.push_back(y);
  kx.push_back(x);
  lo.insert(lo.end(), tap_lo.begin(), tap_lo.end());
  hi.insert(hi.end(), tap_hi.begin(), tap_hi.end());
}

TapSet TapSet::from_mask(int kh, int kw, int64_t cin, int64_t cout, MaskType mask, int color_groups) {
  TapSet ts;
  ts.kh = kh;
  ts.kw = kw;
  ts.cin = cin;
  ts.cout = cout;
  const int cy = kh / 2, cx = kw / 2;
  for (int y = 0; y < kh; ++y) {
    for (int x = 0; x < kw; ++x) {
      const bool before_centre = y < cy || (y == cy && x < cx);
      const bool centre = y == cy && x == cx;
      if (!before_centre && !centre) continue;
      std::vector<int32_t> lo(cout), hi(cout);
      for (int64_t o = 0; o < cout; ++o) {
        int64_t l = 0, h = cin;
        if (centre) {
          if (color_groups == 1) {
            h = mask == MaskType::B ? cin : 0;
          } else {
            // Output block j reads input blocks i < j (A) or i <= j (B): a prefix of the input channels.
            const int64_t j = o / (cout / color_groups);
            const int64_t blocks = mask == MaskType::B ? j + 1 : j;
            h = blocks * (cin / color_groups);
          }
        }
        lo[o] = static_cast<int32_t>(l);
        hi[o] = static_cast<int32_t>(h);
      }
      ts.add_tap(y, x, lo, hi);
    }
  }
  return ts;
}

TapSet TapSet::from_kernel(const float* kernel, int kh, int kw, int64_t cin, int64_t cout) {
  TapSet ts;
  ts.kh = kh;
  ts.kw = kw;
  ts.cin = cin;
  ts.cout = cout;
  for (int y = 0; y < kh; ++y) {
    for (int x = 0; x < kw; ++x) {
      const float* tap = kernel + (int64_t(y) * kw + x) * cin * cout;
      std::vector<int32_t> lo(cout, 0), hi(cout, 0);
      for (int64_t o = 0; o < cout; ++o) {
        int64_t first = -1, last = -1;
        for (int64_t ci = 0; ci < cin; ++ci) {
          if (tap[ci * cout + o] != 0.0f) {
            if (first < 0) first = ci;
            last = ci;
          }
        }
        if (first >= 0) {
          lo[o] = static_cast<int32_t>(first);
          hi[o] = static_cast<int32_t>(last + 1);
        }
      }
      ts.add_tap(y, x, lo, hi);
    }
  }
  return ts;
}

static std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string check_mask_args(int kh, int kw, int64_t cin, int64_t kernel_cin, int64_t cout,
                            const std::string& mask_type, int color_groups, int dil_h, int dil_w, const std::string& padding) {
  using std::to_string;  // not an ostream: see csrc/python/conv_args.h's shape_str
  const std::string m = lower(mask_type);
  if (m != "a" && m != "b") return "mask_type must be 'A' or 'B', got '" + mask_type + "'";
  if (kh < 1 || kw < 1)
    return "kernel spatial size must be >= 1, got (" + to_string(kh) + ", " + to_string(kw) + ")";
  if (kh % 2 == 0 || kw % 2 == 0)
    return "kernel_size must be odd in both dimensions (an even kernel has no centre tap, so the mask "
           "would be ambiguous), got (" + to_string(kh) + ", " + to_string(kw) + ")";
  if (cin != kernel_cin)
    return "kernel input channels must match the input's channels: kernel has " + to_string(kernel_cin) +
           ", input has " + to_string(cin);
  if (color_groups != 1 && color_groups != 3) return "color_groups must be 1 or 3, got " + to_string(color_groups);
  if (cin % color_groups != 0 || cout % color_groups != 0)
    return "color_groups=" + to_string(color_groups) + " needs input and output channels divisible by " +
           to_string(color_groups) + ", got " + to_string(cin) + " input and " + to_string(cout) + " output channels";
  if (dil_h < 1 || dil_w < 1)
    return "dilation_rate must be >= 1, got (" + to_string(dil_h) + ", " + to_string(dil_w) + ")";
  if (lower(padding) != "same" && lower(padding) != "valid")
    return "padding must be 'same' or 'valid', got '" + padding + "'";
  return "";
}

MaskType parse_mask_type(const std::string& mask_type) {
  return lower(mask_type) == "a" ? MaskType::A : MaskType::B;
}

}  // namespace pcf
