// Shared test helpers: a seeding fixture, temporary folders, and writers for
// tiny synthetic dataset files in the real on-disk formats.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace limpq::testing {

// Seeds torch and gives every test a fresh temporary folder.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // A fresh folder under the system temp dir, removed after the test.
  const std::string& temp_dir() const { return temp_dir_; }
  std::string temp_path(const std::string& name) const { return temp_dir_ + "/" + name; }

 private:
  std::string temp_dir_;
};

// Writes an IDX file of unsigned bytes; gzip-compressed when `gzip`.
void write_idx(const std::string& path, const std::vector<int64_t>& dims, const std::vector<uint8_t>& data,
               bool gzip = false);

// Writes raw bytes.
void write_bytes(const std::string& path, const std::string& bytes);

// Writes a tiny MNIST-format folder: `n_train` / `n_test` 28x28 images whose
// class (0..9) is encoded in their brightness pattern so that a network can
// learn it. Returns the folder.
std::string write_synthetic_mnist(const std::string& dir, int64_t n_train, int64_t n_test, bool gzip = true);

// Encodes an RGB image (HWC) as JPEG.
std::string encode_jpeg(const std::vector<uint8_t>& rgb, int width, int height);

// The message of the c10::Error `fn` throws (without backtrace), or "" when
// it throws nothing.
std::string error_of(const std::function<void()>& fn);

// Absolute path of the real Fashion-MNIST folder if installed, else "".
std::string fashion_mnist_dir();

}  // namespace limpq::testing
