#include "limpq/data/readers.h"

#include <c10/util/Exception.h>
#include <turbojpeg.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>

#include "limpq/util/atomic_file.h"

namespace limpq::data {
namespace fs = std::filesystem;

std::string read_maybe_gzip(const std::string& path) {
  std::string raw = util::read_file(path);
  const bool gzipped = raw.size() >= 2 && static_cast<uint8_t>(raw[0]) == 0x1f &&
                       static_cast<uint8_t>(raw[1]) == 0x8b;
  if (!gzipped) return raw;

  z_stream zs{};
  TORCH_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "'", path, "': zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  std::string out;
  char buffer[1 << 16];
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buffer);
    zs.avail_out = sizeof(buffer);
    status = inflate(&zs, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      const std::string msg = zs.msg ? zs.msg : "no detail";
      inflateEnd(&zs);
      TORCH_CHECK(false, "'", path, "': corrupt gzip data (", msg, ")");
    }
    out.append(buffer, sizeof(buffer) - zs.avail_out);
    if (status == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {
      inflateEnd(&zs);
      TORCH_CHECK(false, "'", path, "': truncated gzip file (the stream ends early)");
    }
  }
  inflateEnd(&zs);
  return out;
}

IdxArray parse_idx(const std::string& bytes, const std::string& name) {
  TORCH_CHECK(bytes.size() >= 4, "'", name, "': not an IDX file (", bytes.size(),
              " bytes, shorter than the 4-byte header)");
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  TORCH_CHECK(p[0] == 0 && p[1] == 0, "'", name, "': wrong IDX magic number (first bytes ",
              int(p[0]), " ", int(p[1]), ", expected 0 0)");
  TORCH_CHECK(p[2] == 0x08, "'", name, "': IDX element type 0x", std::hex, int(p[2]),
              " is not supported (expected 0x08, unsigned byte)");
  const int ndims = p[3];
  TORCH_CHECK(ndims >= 1 && ndims <= 4, "'", name, "': IDX rank ", ndims, " is not in 1..4");
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  TORCH_CHECK(bytes.size() >= header, "'", name, "': truncated IDX header");
  IdxArray arr;
  int64_t count = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint8_t* q = p + 4 + 4 * d;
    const int64_t dim = (int64_t(q[0]) << 24) | (int64_t(q[1]) << 16) | (int64_t(q[2]) << 8) | q[3];
    TORCH_CHECK(dim > 0, "'", name, "': IDX dimension ", d, " is ", dim);
    arr.dims.push_back(dim);
    // Checked before multiplying: four 32-bit dimensions overflow int64.
    constexpr int64_t kMaxElements = int64_t(1) << 40;
    TORCH_CHECK(count <= kMaxElements / dim, "'", name, "': IDX dimensions are implausibly large");
    count *= dim;
  }
  const int64_t have = static_cast<int64_t>(bytes.size() - header);
  TORCH_CHECK(have == count, "'", name, "': IDX header promises ", count, " bytes of data but the file has ",
              have, have < count ? " (truncated file)" : " (trailing bytes)");
  arr.data.assign(p + header, p + header + count);
  return arr;
}

IdxArray read_idx(const std::string& path) { return parse_idx(read_maybe_gzip(path), path); }

std::shared_ptr<const Dataset> load_idx_dataset(const std::string& images_path,
                                                const std::string& labels_path,
                                                int64_t num_classes) {
  IdxArray images = read_idx(images_path);
  IdxArray labels = read_idx(labels_path);
  TORCH_CHECK(images.dims.size() == 3, "'", images_path, "': expected an N x H x W image array, got rank ",
              images.dims.size());
  TORCH_CHECK(labels.dims.size() == 1, "'", labels_path, "': expected a label vector, got rank ",
              labels.dims.size());
  TORCH_CHECK(images.dims[0] == labels.dims[0], "'", images_path, "' holds ", images.dims[0],
              " images but '", labels_path, "' holds ", labels.dims[0], " labels");
  std::vector<int64_t> label_values(labels.data.begin(), labels.data.end());
  for (size_t i = 0; i < label_values.size(); ++i) {
    TORCH_CHECK(label_values[i] < num_classes, "'", labels_path, "': label ", label_values[i],
                " of example ", i, " is outside 0..", num_classes - 1);
  }
  return std::make_shared<InMemoryDataset>(std::move(images.data), std::move(label_values), images.dims[1],
                                           images.dims[2], 1, num_classes, images_path);
}

namespace {

std::string find_file(const std::string& root, const std::string& stem) {
  for (const std::string& candidate : {stem, stem + ".gz"}) {
    const std::string path = (fs::path(root) / candidate).string();
    if (util::file_exists(path)) return path;
  }
  TORCH_CHECK(false, "dataset folder '", root, "': neither '", stem, "' nor '", stem,
              ".gz' exists");
}

}  // namespace

std::shared_ptr<const Dataset> load_mnist_format(const std::string& root, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  return load_idx_dataset(find_file(root, prefix + "-images-idx3-ubyte"),
                          find_file(root, prefix + "-labels-idx1-ubyte"), 10);
}

std::shared_ptr<const Dataset> parse_cifar(const std::vector<std::string>& paths, int64_t label_bytes,
                                           int64_t num_classes) {
  constexpr int64_t kSide = 32, kChannels = 3, kPixels = kSide * kSide * kChannels;
  const int64_t record = label_bytes + kPixels;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const auto& path : paths) {
    const std::string bytes = util::read_file(path);
    TORCH_CHECK(!bytes.empty() && static_cast<int64_t>(bytes.size()) % record == 0, "'", path,
                "': ", bytes.size(), " bytes is not a whole number of ", record,
                "-byte CIFAR records (truncated or not a CIFAR", num_classes, " batch)");
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
    const int64_t n = static_cast<int64_t>(bytes.size()) / record;
    const size_t base = pixels.size();
    pixels.resize(base + n * kPixels);
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* r = p + i * record;
      const int64_t label = r[label_bytes - 1];
      TORCH_CHECK(label < num_classes, "'", path, "': record ", i, " has label ", label,
                  ", outside 0..", num_classes - 1);
      labels.push_back(label);
      uint8_t* dst = pixels.data() + base + i * kPixels;
      const uint8_t* src = r + label_bytes;  // CHW planes in the file
      for (int64_t c = 0; c < kChannels; ++c) {
        for (int64_t k = 0; k < kSide * kSide; ++k) dst[k * kChannels + c] = src[c * kSide * kSide + k];
      }
    }
  }
  std::string desc = paths.size() == 1 ? paths[0] : fs::path(paths[0]).parent_path().string();
  return std::make_shared<InMemoryDataset>(std::move(pixels), std::move(labels), kSide, kSide, kChannels,
                                           num_classes, desc);
}

std::shared_ptr<const Dataset> load_cifar10(const std::string& root, Split split) {
  std::vector<std::string> paths;
  if (split == Split::kTrain) {
    for (int i = 1; i <= 5; ++i) paths.push_back(find_file(root, "data_batch_" + std::to_string(i) + ".bin"));
  } else {
    paths.push_back(find_file(root, "test_batch.bin"));
  }
  return parse_cifar(paths, 1, 10);
}

std::shared_ptr<const Dataset> load_cifar100(const std::string& root, Split split) {
  return parse_cifar({find_file(root, split == Split::kTrain ? "train.bin" : "test.bin")}, 2, 100);
}

namespace {

// One decompressor per thread: turbojpeg handles are not thread-safe.
struct JpegDecoder {
  tjhandle handle = tjInitDecompress();
  ~JpegDecoder() {
    if (handle) tjDestroy(handle);
  }
};

bool is_jpeg_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg";
}

}  // namespace

Image decode_jpeg(const std::string& bytes, const std::string& name) {
  thread_local JpegDecoder decoder;
  TORCH_CHECK(decoder.handle != nullptr, "turbojpeg: cannot create a decompressor");
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  auto* src = reinterpret_cast<const unsigned char*>(bytes.data());
  const auto size = static_cast<unsigned long>(bytes.size());
  TORCH_CHECK(tjDecompressHeader3(decoder.handle, src, size, &width, &height, &subsamp, &colorspace) == 0,
              "'", name, "': not a decodable JPEG (", tjGetErrorStr2(decoder.handle), ")");
  TORCH_CHECK(width > 0 && height > 0 && int64_t(width) * height <= (int64_t(1) << 28), "'", name,
              "': JPEG has implausible size ", width, "x", height);
  Image img(height, width, 3);
  const int rc = tjDecompress2(decoder.handle, src, size, img.pixels.data(), width, 0, height, TJPF_RGB,
                               TJFLAG_ACCURATEDCT);
  if (rc != 0) {
    // Warnings (e.g. premature end of data) still produce pixels; treat them
    // as errors all the same: a half-decoded image is silent garbage.
    TORCH_CHECK(false, "'", name, "': JPEG decoding failed (", tjGetErrorStr2(decoder.handle), ")");
  }
  return img;
}

ImageFolderDataset::ImageFolderDataset(const std::string& root) : root_(root) {
  std::error_code ec;
  TORCH_CHECK(fs::is_directory(root, ec), "image folder '", root, "' does not exist or is not a directory");
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) classes_.push_back(entry.path().filename().string());
  }
  std::sort(classes_.begin(), classes_.end());
  TORCH_CHECK(!classes_.empty(), "image folder '", root,
              "' has no class sub-folders (expected root/<class>/<image>.jpg)");
  for (size_t label = 0; label < classes_.size(); ++label) {
    const fs::path dir = fs::path(root) / classes_[label];
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.is_regular_file() && is_jpeg_name(entry.path())) files.push_back(entry.path().string());
    }
    TORCH_CHECK(!files.empty(), "image folder '", root, "': class folder '", dir.string(),
                "' holds no .jpg/.jpeg images");
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      files_.push_back(std::move(f));
      labels_.push_back(static_cast<int64_t>(label));
    }
  }
}

Image ImageFolderDataset::image(int64_t index) const {
  const std::string& path = files_.at(index);
  return decode_jpeg(util::read_file(path), path);
}

}  // namespace limpq::data
