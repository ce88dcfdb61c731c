// Argument conversion shared by the addon's classes: JavaScript numbers or
// bigints to unsigned integers, typed arrays of a given kind, with errors that
// name the argument.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "core/format.h"

namespace introvisor {

inline uint64_t ToU64(const Napi::Env& env, const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(what) + " does not fit in 64 bits");
    return r;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number or bigint");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw Napi::RangeError::New(env, std::string(what) + " must be a non-negative integer below 2^53 (pass a bigint for larger)");
  return static_cast<uint64_t>(d);
}

inline bool IsTypedArrayOf(const Napi::Value& v, napi_typedarray_type type) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == type;
}

}  // namespace introvisor
