#include "support/test_support.h"

#include <turbojpeg.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace limpq::testing {
namespace fs = std::filesystem;

void SeededTest::SetUp() {
  torch::manual_seed(0);
  std::string templ = (fs::temp_directory_path() / "limpq_test_XXXXXX").string();
  ASSERT_NE(::mkdtemp(templ.data()), nullptr);
  temp_dir_ = templ;
}

void SeededTest::TearDown() {
  std::error_code ec;
  fs::remove_all(temp_dir_, ec);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

void write_idx(const std::string& path, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data,
               bool gzip) {
  std::string bytes = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (int64_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  bytes.append(reinterpret_cast<const char*>(data.data()), data.size());
  if (!gzip) {
    write_bytes(path, bytes);
    return;
  }
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string write_synthetic_mnist(const std::string& dir, int64_t n_train, int64_t n_test, bool gzip) {
  fs::create_directories(dir);
  std::mt19937 rng(1234);
  auto make = [&](const std::string& prefix, int64_t n) {
    std::vector<uint8_t> images(n * 28 * 28), labels(n);
    for (int64_t i = 0; i < n; ++i) {
      const int label = static_cast<int>(i % 10);
      labels[i] = static_cast<uint8_t>(label);
      // Class k lights up the k-th horizontal band, plus noise.
      for (int y = 0; y < 28; ++y) {
        for (int x = 0; x < 28; ++x) {
          const bool lit = y / 3 == label % 9 && (label < 9 || x < 14);
          images[(i * 28 + y) * 28 + x] = static_cast<uint8_t>((lit ? 200 : 20) + rng() % 40);
        }
      }
    }
    const std::string ext = gzip ? ".gz" : "";
    write_idx(dir + "/" + prefix + "-images-idx3-ubyte" + ext, {n, 28, 28}, images, gzip);
    write_idx(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, {n}, labels, gzip);
  };
  make("train", n_train);
  make("t10k", n_test);
  return dir;
}

std::string encode_jpeg(const std::vector<uint8_t>& rgb, int width, int height) {
  tjhandle h = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(h, rgb.data(), width, 0, height, TJPF_RGB, &out, &size, TJSAMP_444, 95, 0);
  std::string bytes;
  if (rc == 0) bytes.assign(reinterpret_cast<char*>(out), size);
  tjFree(out);
  tjDestroy(h);
  return bytes;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

std::string fashion_mnist_dir() {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  return fs::exists(dir + "/t10k-images-idx3-ubyte.gz") ? dir : "";
}

}  // namespace limpq::testing
