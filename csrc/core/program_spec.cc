// Core (framework-free C++17): parser, writer and builder of the column-program text format
// (program_spec.h documents the format).
#include "program_spec.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace pcf {

namespace {

constexpr const char* kMagic = "pixelcnn_fast.column_program";
constexpr int kVersion = 1;

std::string fmt_float(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));  // 9 digits: exact for float32
  return buf;
}

std::string encode_name(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (ch <= ' ' || ch >= 0x7f || ch == '%') {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out;
}

std::string operand_text(const Operand& o) { return (o.is_const ? "i" : "b") + std::to_string(o.index); }

// One statement being parsed: its line number and key=value tokens, each consumed at most once, so that
// an error can name the line and the token and a leftover token is reported as unknown.
class Statement {
 public:
  Statement(int line, std::string keyword, std::vector<std::string> tokens)
      : line_(line), keyword_(std::move(keyword)) {
    for (const std::string& t : tokens) {
      const size_t eq = t.find('=');
      if (eq == std::string::npos || eq == 0) fail(t, "expected key=value");
      std::string key = t.substr(0, eq);
      if (kv_.count(key)) fail(t, "key '" + key + "' given twice");
      kv_[key] = {t, t.substr(eq + 1)};
    }
  }

  [[noreturn]] void fail(const std::string& token, const std::string& what) const {
    throw std::invalid_argument("program spec line " + std::to_string(line_) + ", token '" + token + "': " + what);
  }
  int line() const { return line_; }
  const std::string& keyword() const { return keyword_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  // The token and value of a required key.
  std::pair<std::string, std::string> take(const std::string& key) {
    auto it = kv_.find(key);
    if (it == kv_.end()) fail(keyword_, "'" + keyword_ + "' needs " + key + "=");
    auto r = it->second;
    kv_.erase(it);
    return r;
  }
  int64_t take_int(const std::string& key, int64_t lo, int64_t hi) {
    auto [tok, v] = take(key);
    return to_int(tok, v, lo, hi);
  }
  float take_float(const std::string& key) {
    auto [tok, v] = take(key);
    errno = 0;
    char* end = nullptr;
    const float f = std::strtof(v.c_str(), &end);
    if (v.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(f)) fail(tok, "expected a finite number");
    return f;
  }
  std::vector<int64_t> take_ints(const std::string& key, int64_t lo, int64_t hi) {
    auto [tok, v] = take(key);
    std::vector<int64_t> out;
    size_t start = 0;
    while (true) {
      const size_t comma = v.find(',', start);
      out.push_back(to_int(tok, v.substr(start, comma - start), lo, hi));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }
  Operand to_operand(const std::string& tok, const std::string& v) const {
    if (v.size() < 2 || (v[0] != 'b' && v[0] != 'i'))
      fail(tok, "an operand is b<buffer> or i<input>, got '" + v + "'");
    Operand o;
    o.is_const = v[0] == 'i';
    o.index = static_cast<int>(to_int(tok, v.substr(1), 0, 1 << 30));
    return o;
  }
  std::vector<Operand> take_operands(const std::string& key) {
    auto [tok, v] = take(key);
    std::vector<Operand> out;
    size_t start = 0;
    while (true) {
      const size_t comma = v.find(',', start);
      out.push_back(to_operand(tok, v.substr(start, comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }
  template <typename E>
  E take_enum(const std::string& key) {
    auto [tok, v] = take(key);
    E e{};
    if (!parse_name(v, &e)) fail(tok, "unknown " + key + " '" + v + "' (expected one of " + name_list<E>() + ")");
    return e;
  }
  std::string take_name() {
    if (!has("name")) return "";
    auto [tok, v] = take("name");
    std::string out;
    for (size_t k = 0; k < v.size(); ++k) {
      if (v[k] != '%') {
        out += v[k];
        continue;
      }
      const std::string hx = v.substr(k + 1, 2);
      if (hx.size() != 2 || !std::isxdigit(static_cast<unsigned char>(hx[0])) ||
          !std::isxdigit(static_cast<unsigned char>(hx[1])))
        fail(tok, "bad %XX escape '%" + hx + "'");
      const long c = std::strtol(hx.c_str(), nullptr, 16);
      out += static_cast<char>(c);
      k += 2;
    }
    return out;
  }
  // Every key must have been consumed.
  void finish() const {
    if (!kv_.empty()) fail(kv_.begin()->second.first, "unknown key for '" + keyword_ + "'");
  }

 private:
  int64_t to_int(const std::string& tok, const std::string& v, int64_t lo, int64_t hi) const {
    errno = 0;
    char* end = nullptr;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno == ERANGE) fail(tok, "expected an integer, got '" + v + "'");
    if (x < lo || x > hi)
      fail(tok, std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  int line_;
  std::string keyword_;
  std::map<std::string, std::pair<std::string, std::string>> kv_;  // key -> (token, value)
};

std::vector<std::string> split_blanks(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream is(line);
  std::string t;
  while (is >> t) out.push_back(t);
  return out;
}

constexpr int64_t kMaxDim = int64_t(1) << 30;
constexpr int64_t kMaxOffset = 1 << 15;           // a shift's or offset tap's rows / columns

}  // namespace

ProgramSpec parse_program_spec(const std::string& text) {
  // Statements with their line numbers, comments and blank lines dropped.
  std::vector<std::pair<int, std::vector<std::string>>> stmts;
  {
    std::istringstream is(text);
    std::string line;
    int no = 0;
    while (std::getline(is, line)) {
      ++no;
      auto toks = split_blanks(line);
      if (toks.empty() || toks[0][0] == '#') continue;
      stmts.push_back({no, std::move(toks)});
    }
  }
  if (stmts.empty()) throw std::invalid_argument("program spec is empty (expected '" + std::string(kMagic) + " 1')");
  {
    const auto& [no, toks] = stmts.front();
    const std::string head = toks[0];
    if (head != kMagic)
      throw std::invalid_argument("program spec line " + std::to_string(no) + ", token '" + head +
                                  "': expected '" + kMagic + " " + std::to_string(kVersion) + "' first");
    if (toks.size() != 2 || toks[1] != std::to_string(kVersion))
      throw std::invalid_argument("program spec line " + std::to_string(no) + ", token '" +
                                  (toks.size() > 1 ? toks[1] : head) + "': unsupported version (this build reads " +
                                  std::to_string(kVersion) + ")");
  }
  ProgramSpec spec;
  bool have_image = false, have_buffers = false, have_head = false, ended = false;
  int head_line = 0;
  std::vector<int> input_lines;
  for (size_t s = 1; s < stmts.size(); ++s) {
    const int no = stmts[s].first;
    const std::vector<std::string>& toks = stmts[s].second;
    Statement st(no, toks[0], std::vector<std::string>(toks.begin() + 1, toks.end()));
    const std::string& kw = toks[0];
    if (ended) st.fail(kw, "statement after 'end'");
    if (kw == "end") {
      st.finish();
      ended = true;
      continue;
    }
    if (kw == "image") {
      if (have_image) st.fail(kw, "'image' given twice");
      spec.height = static_cast<int>(st.take_int("height", 1, kMaxDim));
      spec.width = static_cast<int>(st.take_int("width", 1, kMaxDim));
      spec.channels = static_cast<int>(st.take_int("channels", 1, 1 << 16));
      // Positions are the Philox counter's 32-bit position word.
      if (int64_t(spec.height) * spec.width > (int64_t(1) << 32))
        st.fail("height=" + std::to_string(spec.height),
                "height * width must be <= 2**32 (positions are 32-bit), got " + std::to_string(spec.height) + " * " +
                    std::to_string(spec.width));
      st.finish();
      have_image = true;
      continue;
    }
    if (!have_image) st.fail(kw, "'image' must come right after the version line");
    if (kw == "buffers") {
      if (have_buffers) st.fail(kw, "'buffers' given twice");
      spec.buffer_channels = st.take_ints("channels", 1, kMaxDim);
      {
        // One cached row of every buffer for one image: bounded so that no cache size overflows int64.
        int64_t row = 0;
        for (int64_t c : spec.buffer_channels) row += c * spec.width;
        if (row > (int64_t(1) << 34))
          st.fail("channels", "width * the buffers' channels must be <= 2**34 floats per cached row, got " +
                                  std::to_string(row));
      }
      if (spec.buffer_channels[0] != spec.channels)
        st.fail("channels=" + std::to_string(spec.buffer_channels[0]),
                "buffer 0 is the image and must have " + std::to_string(spec.channels) + " channels");
      st.finish();
      have_buffers = true;
      continue;
    }
    if (!have_buffers) st.fail(kw, "'buffers' must come right after 'image'");
    if (kw == "grids") {  // docs/SEMANTICS.md, "Grids": one (fy, fx, ny, nx) per buffer
      if (!spec.buffer_grids.empty()) st.fail(kw, "'grids' given twice");
      if (!spec.inputs.empty() || !spec.steps.empty()) st.fail(kw, "'grids' must come right after 'buffers'");
      const std::vector<int64_t> fy = st.take_ints("fy", 1, kMaxDim), fx = st.take_ints("fx", 1, kMaxDim),
                                 ny = st.take_ints("ny", 1, kMaxDim), nx = st.take_ints("nx", 1, kMaxDim);
      const size_t nb = spec.buffer_channels.size();
      if (fy.size() != nb || fx.size() != nb || ny.size() != nb || nx.size() != nb)
        st.fail(kw, "fy=, fx=, ny=, nx= need one value per buffer (" + std::to_string(nb) + ")");
      for (size_t b = 0; b < nb; ++b) {
        // A grid s coarser than the image has at most ceil(H / s) + 1 rows (a VALID conv after a pad).
        if (ny[b] > spec.height / fy[b] + 2 || nx[b] > spec.width / fx[b] + 2)
          st.fail("ny=" + std::to_string(ny[b]), "buffer " + std::to_string(b) + "'s " + std::to_string(ny[b]) + "x" +
                                                    std::to_string(nx[b]) + " grid is larger than the image at 1/" +
                                                    std::to_string(fy[b]) + " x 1/" + std::to_string(fx[b]));
        spec.buffer_grids.push_back({int(fy[b]), int(fx[b]), int(ny[b]), int(nx[b])});
      }
      if (spec.buffer_grids[0] != Grid{1, 1, spec.height, spec.width})
        st.fail(kw, "buffer 0 is the image: its grid is 1,1," + std::to_string(spec.height) + "," +
                        std::to_string(spec.width));
      st.finish();
      continue;
    }
    if (kw == "input") {
      if (!spec.steps.empty()) st.fail(kw, "inputs must be declared before the steps");
      const int64_t idx = st.take_int("index", 0, kMaxDim);
      if (idx != static_cast<int64_t>(spec.inputs.size()))
        st.fail("index=" + std::to_string(idx), "inputs must be declared in order; expected index=" +
                                                    std::to_string(spec.inputs.size()));
      SpecInput in;
      auto [ktok, kind] = st.take("kind");
      if (kind == "kernel") {
        in.is_kernel = true;
        auto shape = st.take_ints("shape", 1, kMaxDim);
        if (shape.size() != 4) st.fail("shape=...", "a kernel shape is kh,kw,cin,cout");
        for (int d = 0; d < 4; ++d) in.shape[d] = shape[d];
      } else if (kind != "const") {
        st.fail(ktok, "unknown input kind '" + kind + "' (expected const or kernel)");
      }
      st.finish();
      spec.inputs.push_back(in);
      input_lines.push_back(no);
      continue;
    }
    if (kw == "head") {
      if (have_head) st.fail(kw, "'head' given twice");
      spec.head.kind = st.take_enum<DrawHead>("kind");
      spec.head.buffer = static_cast<int>(st.take_int("buffer", 0, kMaxDim));
      spec.head.levels = static_cast<int>(st.take_int("levels", 1, kMaxDim));
      spec.head.value_scale = st.take_float("scale");
      spec.head.value_offset = st.take_float("offset");
      // A mixture's K; no other head has components (finish() refuses the key as unknown).
      if (spec.head.kind == DrawHead::kLogisticMixture)
      {
        spec.head.components = static_cast<int>(st.take_int("components", 1, 1 << 24));
        // The parameter layout (philox.h): 0 PixelCNN++'s (the default when absent), 1 TFP's.
        if (st.has("layout"))
          spec.head.mixture_layout = static_cast<MixtureLayout>(st.take_int("layout", 0, 1));
      }
      st.finish();
      have_head = true;
      head_line = no;
      continue;
    }
    Step step;
    if (!parse_name(kw, &step.kind)) st.fail(kw, "unknown statement (expected input, a step kind, head or end)");
    if (have_head) st.fail(kw, "steps must come before 'head'");
    step.line = no;
    const int nb = static_cast<int>(spec.buffer_channels.size());
    const int ni = static_cast<int>(spec.inputs.size());
    step.out = static_cast<int>(st.take_int("out", 1, nb - 1));  // buffer 0 is the image: never written
    auto buffer = [&](const char* key) { return static_cast<int>(st.take_int(key, 0, nb - 1)); };
    auto check_operand = [&](const Operand& o, bool want_kernel) {
      const std::string t = operand_text(o);
      if (!o.is_const && o.index >= nb) st.fail(t, "buffer " + std::to_string(o.index) + " does not exist");
      if (o.is_const) {
        if (o.index >= ni) st.fail(t, "input " + std::to_string(o.index) + " is not declared");
        if (spec.inputs[o.index].is_kernel != want_kernel)
          st.fail(t, "input " + std::to_string(o.index) + " is declared as a " +
                         (spec.inputs[o.index].is_kernel ? "kernel" : "const") + ", used as a " +
                         (want_kernel ? "kernel" : "const"));
      }
    };
    switch (step.kind) {
      case StepKind::kConv: {
        step.operands = {{false, buffer("in")}};
        step.kernel = static_cast<int>(st.take_int("kernel", 0, kMaxDim));
        check_operand({true, step.kernel}, true);
        step.dh = static_cast<int>(st.take_int("dh", 1, 1 << 16));
        step.dw = static_cast<int>(st.take_int("dw", 1, 1 << 16));
        auto [ptok, pad] = st.take("padding");
        if (pad != "same" && pad != "valid" && pad != "offset") st.fail(ptok, "padding is same, valid or offset");
        step.same_padding = pad == "same";
        if (pad == "offset") {  // a pad + VALID conv: the top-left tap's offset
          step.offset_taps = true;
          step.oy = static_cast<int>(st.take_int("oy", -kMaxOffset, kMaxOffset));
          step.ox = static_cast<int>(st.take_int("ox", -kMaxOffset, kMaxOffset));
        }
        if (st.has("stride")) {  // grids: a strided or transposed conv
          const std::vector<int64_t> s = st.take_ints("stride", 1, 1 << 10);
          if (s.size() != 2) st.fail("stride", "stride= is sy,sx");
          step.sy = static_cast<int>(s[0]);
          step.sx = static_cast<int>(s[1]);
        }
        if (st.has("transpose")) step.transpose = st.take_int("transpose", 0, 1) != 0;
        if ((step.sy != 1 || step.sx != 1 || step.transpose) && (!step.offset_taps || spec.buffer_grids.empty()))
          st.fail("stride", "a strided or transposed conv has padding=offset and needs the 'grids' statement");
        if (step.transpose && (step.dh != 1 || step.dw != 1)) st.fail("transpose", "a transposed conv has dh=dw=1");
        const SpecInput& k = spec.inputs[step.kernel];
        if (k.shape[2] != spec.buffer_channels[step.input()] || k.shape[3] != spec.buffer_channels[step.out])
          st.fail("kernel=" + std::to_string(step.kernel),
                  "kernel shape (" + std::to_string(k.shape[0]) + ", " + std::to_string(k.shape[1]) + ", " +
                      std::to_string(k.shape[2]) + ", " + std::to_string(k.shape[3]) + ") does not map buffer " +
                      std::to_string(step.input()) + " (" + std::to_string(spec.buffer_channels[step.input()]) +
                      " channels) to buffer " + std::to_string(step.out) + " (" +
                      std::to_string(spec.buffer_channels[step.out]) + " channels)");
        break;
      }
      case StepKind::kBinary: {
        step.binary = st.take_enum<BinaryFn>("fn");
        auto [atok, a] = st.take("a");
        auto [btok, b] = st.take("b");
        step.operands = {st.to_operand(atok, a), st.to_operand(btok, b)};
        for (const auto& o : step.operands) check_operand(o, false);
        if (step.operands[0].is_const && step.operands[1].is_const)
          st.fail(btok, "a binary step reads at least one buffer");
        break;
      }
      case StepKind::kAct:
        step.operands = {{false, buffer("in")}};
        step.act = st.take_enum<ActFn>("fn");
        step.alpha = st.take_float("alpha");
        break;
      case StepKind::kConcat:
        step.operands = st.take_operands("parts");
        for (const auto& o : step.operands) check_operand(o, false);
        break;
      case StepKind::kGather:
        step.operands = {{false, buffer("in")}};
        for (int64_t c : st.take_ints("channels", 0, kMaxDim)) step.channels.push_back(static_cast<int32_t>(c));
        break;
      case StepKind::kSoftmax:
        step.operands = {{false, buffer("in")}};
        step.group = static_cast<int>(st.take_int("group", 1, kMaxDim));
        step.log = st.take_int("log", 0, 1) != 0;
        break;
      case StepKind::kReduce:
        step.operands = {{false, buffer("in")}};
        step.reduce = st.take_enum<ReduceFn>("fn");
        break;
      case StepKind::kShift:
        step.operands = {{false, buffer("in")}};
        step.dy = static_cast<int>(st.take_int("dy", -kMaxOffset, kMaxOffset));
        step.dx = static_cast<int>(st.take_int("dx", -kMaxOffset, kMaxOffset));
        break;
    }
    step.phase = static_cast<int>(st.take_int("phase", 0, spec.channels));
    if (st.has("delay")) {  // dy,dx
      const std::vector<int64_t> d = st.take_ints("delay", -kMaxOffset, kMaxOffset);
      if (d.size() != 2) st.fail("delay", "delay= is dy,dx");
      step.delay_y = static_cast<int>(d[0]);
      step.delay_x = static_cast<int>(d[1]);
    }
    if (st.has("phases")) {
      const std::string tok = "phases";
      step.phase_runs = st.take_ints("phases", 0, kMaxDim);
      int64_t total = 0, top = -1;
      if (step.phase_runs.size() % 2 != 0) st.fail(tok, "phases= lists (phase, count) pairs");
      for (size_t k = 0; k < step.phase_runs.size(); k += 2) {
        if (step.phase_runs[k] > step.phase) st.fail(tok, "a channel's phase exceeds the step's phase");
        if (step.phase_runs[k + 1] < 1) st.fail(tok, "a run of phases= has no channel");
        top = std::max(top, step.phase_runs[k]);
        total += step.phase_runs[k + 1];
      }
      if (total != spec.buffer_channels[step.out])
        st.fail(tok, "phases= covers " + std::to_string(total) + " channels, the output has " +
                         std::to_string(spec.buffer_channels[step.out]));
      if (top != step.phase) st.fail(tok, "the largest channel phase must be the step's phase");
    }
    step.name = st.take_name();
    st.finish();
    spec.steps.push_back(std::move(step));
  }
  const int last = stmts.back().first;
  auto missing = [&](const std::string& what) {
    throw std::invalid_argument("program spec line " + std::to_string(last) + ", token '" + stmts.back().second[0] +
                                "': " + what);
  };
  if (!have_image) missing("no 'image' statement");
  if (!have_buffers) missing("no 'buffers' statement");
  if (!have_head) missing("no 'head' statement");
  if (!ended) missing("the spec does not end with 'end' (truncated?)");
  if (spec.head.buffer >= static_cast<int>(spec.buffer_channels.size()))
    throw std::invalid_argument("program spec line " + std::to_string(head_line) + ", token 'buffer=" +
                                std::to_string(spec.head.buffer) + "': buffer does not exist");
  // An input no step reads is almost certainly a writer bug (consts misaligned with the spec).
  std::vector<bool> used(spec.inputs.size(), false);
  for (const Step& st : spec.steps) {
    if (st.kernel >= 0) used[st.kernel] = true;
    for (const Operand& o : st.operands)
      if (o.is_const) used[o.index] = true;
  }
  for (size_t k = 0; k < used.size(); ++k)
    if (!used[k])
      throw std::invalid_argument("program spec line " + std::to_string(input_lines[k]) + ", token 'index=" +
                                  std::to_string(k) + "': input " + std::to_string(k) + " is read by no step");
  return spec;
}

std::string format_program_spec(const ProgramSpec& spec) {
  std::ostringstream os;
  os << kMagic << ' ' << kVersion << '\n';
  os << "image height=" << spec.height << " width=" << spec.width << " channels=" << spec.channels << '\n';
  os << "buffers channels=";
  for (size_t b = 0; b < spec.buffer_channels.size(); ++b) os << (b ? "," : "") << spec.buffer_channels[b];
  os << '\n';
  if (!spec.buffer_grids.empty()) {
    const char* keys[4] = {"fy", "fx", "ny", "nx"};
    os << "grids";
    for (int f = 0; f < 4; ++f) {
      os << ' ' << keys[f] << '=';
      for (size_t b = 0; b < spec.buffer_grids.size(); ++b) {
        const Grid& g = spec.buffer_grids[b];
        os << (b ? "," : "") << (f == 0 ? g.fy : f == 1 ? g.fx : f == 2 ? g.ny : g.nx);
      }
    }
    os << '\n';
  }
  for (size_t k = 0; k < spec.inputs.size(); ++k) {
    const SpecInput& in = spec.inputs[k];
    os << "input index=" << k << " kind=" << (in.is_kernel ? "kernel" : "const");
    if (in.is_kernel)
      os << " shape=" << in.shape[0] << ',' << in.shape[1] << ',' << in.shape[2] << ',' << in.shape[3];
    os << '\n';
  }
  for (const Step& st : spec.steps) {
    os << name_of(st.kind) << " out=" << st.out;
    switch (st.kind) {
      case StepKind::kConv:
        os << " in=" << st.input() << " kernel=" << st.kernel << " dh=" << st.dh << " dw=" << st.dw
           << " padding=" << (st.offset_taps ? "offset" : st.same_padding ? "same" : "valid");
        if (st.offset_taps) os << " oy=" << st.oy << " ox=" << st.ox;
        if (st.sy != 1 || st.sx != 1) os << " stride=" << st.sy << ',' << st.sx;
        if (st.transpose) os << " transpose=1";
        break;
      case StepKind::kShift:
        os << " in=" << st.input() << " dy=" << st.dy << " dx=" << st.dx;
        break;
      case StepKind::kBinary:
        os << " fn=" << name_of(st.binary) << " a=" << operand_text(st.operands.at(0))
           << " b=" << operand_text(st.operands.at(1));
        break;
      case StepKind::kAct:
        os << " in=" << st.input() << " fn=" << name_of(st.act) << " alpha=" << fmt_float(st.alpha);
        break;
      case StepKind::kConcat:
        os << " parts=";
        for (size_t k = 0; k < st.operands.size(); ++k) os << (k ? "," : "") << operand_text(st.operands[k]);
        break;
      case StepKind::kGather:
        os << " in=" << st.input() << " channels=";
        for (size_t k = 0; k < st.channels.size(); ++k) os << (k ? "," : "") << st.channels[k];
        break;
      case StepKind::kSoftmax:
        os << " in=" << st.input() << " group=" << st.group << " log=" << (st.log ? 1 : 0);
        break;
      case StepKind::kReduce:
        os << " in=" << st.input() << " fn=" << name_of(st.reduce);
        break;
    }
    os << " phase=" << st.phase;
    if (st.delayed()) os << " delay=" << st.delay_y << ',' << st.delay_x;
    if (!st.phase_runs.empty()) {
      os << " phases=";
      for (size_t k = 0; k < st.phase_runs.size(); ++k) os << (k ? "," : "") << st.phase_runs[k];
    }
    if (!st.name.empty()) os << " name=" << encode_name(st.name);
    os << '\n';
  }
  os << "head kind=" << name_of(spec.head.kind) << " buffer=" << spec.head.buffer
     << " levels=" << spec.head.levels << " scale=" << fmt_float(spec.head.value_scale)
     << " offset=" << fmt_float(spec.head.value_offset);
  if (spec.head.kind == DrawHead::kLogisticMixture) {
    os << " components=" << spec.head.components;
    if (spec.head.mixture_layout != MixtureLayout::kPixelCnnPP)
      os << " layout=" << static_cast<int>(spec.head.mixture_layout);
  }
  os << '\n';
  os << "end\n";
  return os.str();
}

}  // namespace pcf
