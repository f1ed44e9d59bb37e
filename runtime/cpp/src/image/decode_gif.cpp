// GIF, first frame only (what Pillow's Image.open + convert("RGB") gives), parsed and LZW-decoded here.
#include <algorithm>
#include <string>
#include <vector>

#include "decode_internal.hpp"

namespace der {
namespace detail {

// ------------------------------------------------------------------------------------------------------------ GIF
// Parsed and LZW-decoded here rather than with giflib, because the status must follow Pillow's reader: it is
// stricter than giflib about codes (a code past the next free table slot is an error), reads sub-blocks as one
// continuous stream, needs the frame's last pixel before the data ends, and skips unknown bytes between blocks.
namespace {

struct GifStream {
  Bytes in;
  std::size_t pos = 0;
  bool eof() const { return pos >= in.size; }
  int byte() { return pos < in.size ? in.data[pos++] : -1; }
  // One data sub-block (Pillow's GifImageFile.data): empty at a terminator or the end of the file.
  Bytes sub_block() {
    const int n = byte();
    if (n <= 0) return Bytes{nullptr, 0};
    const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(n), in.size - pos);
    Bytes b{in.data + pos, k};
    pos += k;
    return b;
  }
};

constexpr int kGifTable = 4096;

// LZW-decode the first frame's indices into `canvas` (w x h indices) at (x0, y0); false if the data runs out
// or is broken in a way Pillow's decoder rejects.
bool gif_lzw(GifStream& st, int min_bits, bool interlace, int x0, int y0, int fw, int fh, int cw,
             std::vector<std::uint8_t>& canvas, std::string& why) {
  if (min_bits > 12) {
    why = "bad LZW code size";
    return false;
  }
  const int clear = 1 << min_bits, end = clear + 1;
  std::vector<std::uint8_t> first(kGifTable), stack(kGifTable);
  std::vector<int> prefix(kGifTable);
  int next = 0, size = 0, mask = 0, last = 0;
  std::uint8_t last_first = 0;
  bool fresh = true;  // right after a clear code
  std::uint32_t bits = 0;
  int n_bits = 0, block_left = 0;
  int x = 0, y = 0, step = interlace ? 8 : 1, pass = interlace ? 1 : 0;
  auto reset = [&] {
    next = clear + 2;
    size = min_bits + 1;
    mask = (1 << size) - 1;
    fresh = true;
  };
  // Writes one pixel; returns true when the frame is complete.
  auto emit = [&](std::uint8_t v) {
    canvas[static_cast<std::size_t>(y0 + y) * cw + x0 + x] = v;
    if (++x < fw) return false;
    x = 0;
    y += step;
    while (y >= fh) {
      if (pass == 1) y = 4, pass = 2;
      else if (pass == 2) step = 4, y = 2, pass = 3;
      else if (pass == 3) step = 2, y = 1, pass = 4;
      else return true;
    }
    return false;
  };
  reset();
  for (;;) {
    while (n_bits < size) {
      if (block_left == 0) {
        const int n = st.byte();
        if (n < 0 || st.in.size - st.pos < static_cast<std::size_t>(n)) {
          why = "image file is truncated";
          return false;
        }
        block_left = n;  // a zero-length block does not end the stream for Pillow's decoder
        continue;
      }
      bits |= static_cast<std::uint32_t>(st.byte()) << n_bits;
      n_bits += 8;
      --block_left;
    }
    int c = static_cast<int>(bits & static_cast<std::uint32_t>(mask));
    bits >>= size;
    n_bits -= size;
    if (c == clear) {
      if (!fresh) reset();
      continue;
    }
    if (c == end) {  // an end code before the frame is full leaves it unfinished: truncated for Pillow
      why = "image file is truncated";
      return false;
    }
    int depth = 0;
    if (fresh) {
      if (c > clear) {
        why = "broken data stream";
        return false;
      }
      last = c;
      last_first = static_cast<std::uint8_t>(c);
      fresh = false;
    } else {
      const int code = c;
      if (c > next) {
        why = "broken data stream";
        return false;
      }
      if (c == next) {
        stack[depth++] = last_first;
        c = last;
      }
      while (c >= clear) {
        if (depth >= kGifTable || c >= kGifTable) {
          why = "broken data stream";
          return false;
        }
        stack[depth++] = first[c];
        c = prefix[c];
      }
      last_first = static_cast<std::uint8_t>(c);
      if (next < kGifTable) {
        first[next] = static_cast<std::uint8_t>(c);
        prefix[next] = last;
        if (next == mask && size < 12) mask = (1 << ++size) - 1;
        ++next;
      }
      last = code;
    }
    if (emit(last_first)) return true;
    while (depth > 0)
      if (emit(stack[--depth])) return true;
  }
}

}  // namespace

void decode_gif(Bytes in, const std::string& name, Decoded& d) {
  if (in.size < 13) fail_corrupt(name, "GIF header is truncated");
  GifStream st{in, 13};
  long long cw = le16(in.data + 6), ch = le16(in.data + 8);
  const int flags = in.data[10];
  std::vector<std::uint8_t> global;
  if (flags & 128) {
    const std::size_t n = std::size_t(3) << ((flags & 7) + 1);
    if (in.size - st.pos < n) fail_corrupt(name, "GIF palette is truncated");
    global.assign(in.data + st.pos, in.data + st.pos + n);
    st.pos += n;
  }
  check_size(name, cw, ch, d);
  int transparent = -1;
  for (;;) {  // blocks up to the first image descriptor, as Pillow's _seek(0) walks them
    const int tag = st.byte();
    if (tag < 0 || tag == ';') fail_corrupt(name, "image not found in GIF frame");
    if (tag == '!') {
      const int label = st.byte();
      if (label < 0) fail_corrupt(name, "GIF extension is truncated");
      Bytes block = st.sub_block();
      if (label == 0xf9 && block.data) {
        if (block.size < 3 || ((block.data[0] & 1) && block.size < 4)) fail_corrupt(name, "GIF control block is short");
        if (block.data[0] & 1) transparent = block.data[3];
      }
      if (label == 0xfe) {  // comment: Pillow reads its blocks up to the terminator and goes on
        while (block.data) block = st.sub_block();
        continue;
      }
      if (label == 0xff && block.data) st.sub_block();
      while (st.sub_block().data) {
      }
      continue;
    }
    if (tag != ',') continue;  // Pillow skips any other byte
    if (in.size - st.pos < 9) fail_corrupt(name, "GIF image descriptor is truncated");
    const std::uint8_t* dsc = in.data + st.pos;
    st.pos += 9;
    const int x0 = le16(dsc), y0 = le16(dsc + 2), fw = le16(dsc + 4), fh = le16(dsc + 6);
    std::vector<std::uint8_t> local;
    if (dsc[8] & 128) {
      const std::size_t n = std::size_t(3) << ((dsc[8] & 7) + 1);
      const std::size_t k = std::min(n, in.size - st.pos);
      local.assign(in.data + st.pos, in.data + st.pos + k);
      st.pos += k;
      if (k % 3) fail_corrupt(name, "GIF palette is truncated");
    }
    const int min_bits = st.byte();
    if (min_bits < 0) fail_corrupt(name, "GIF image data is missing");
    // A first frame reaching past the logical screen grows the canvas, as in Pillow.
    cw = std::max<long long>(cw, x0 + fw);
    ch = std::max<long long>(ch, y0 + fh);
    check_size(name, cw, ch, d);
    if (fw == 0 || fh == 0) fail_corrupt(name, "tile cannot extend outside image");
    const std::vector<std::uint8_t>& pal = (dsc[8] & 128) ? local : global;
    const bool has_pal = (dsc[8] & 128) || (flags & 128);
    std::vector<std::uint8_t> indices(static_cast<std::size_t>(cw) * ch,
                                      static_cast<std::uint8_t>(transparent >= 0 ? transparent : 0));
    std::string why;
    if (!gif_lzw(st, min_bits, (dsc[8] & 64) != 0, x0, y0, fw, fh, static_cast<int>(cw), indices, why))
      fail_corrupt(name, why);
    reset_bitmap(d.bitmap, static_cast<int>(cw), static_cast<int>(ch));
    for (std::size_t i = 0; i < indices.size(); ++i) {
      const std::size_t v = indices[i];
      std::uint8_t* o = &d.bitmap.pixels[3 * i];
      if (!has_pal) {
        o[0] = o[1] = o[2] = static_cast<std::uint8_t>(v);  // no palette: Pillow reads indices as gray levels
      } else if (3 * v + 2 < pal.size()) {
        o[0] = pal[3 * v];
        o[1] = pal[3 * v + 1];
        o[2] = pal[3 * v + 2];
      }  // an index past the palette stays black
    }
    return;
  }
}

}  // namespace detail
}  // namespace der
