// PrefetchLoader: order, determinism across thread counts, epochs, sharding, errors, shutdown.

#include "nddr/data/loader.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <set>
#include <thread>
#include <vector>

#include "nddr/core/error.hpp"
#include "nddr/core/random.hpp"

using Catch::Contains;
using nddr::data::LoaderOptions;
using nddr::data::PrefetchLoader;

namespace {

/// Item = (index, first draw of the sample's Rng): identifies both order and random stream.
struct Item {
  std::int64_t index;
  std::uint64_t draw;
};

PrefetchLoader<Item>::LoadFn identity_load(int delay_us = 0) {
  return [delay_us](std::int64_t i, nddr::Rng& rng) {
    // uneven delays make workers finish out of order
    if (delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay_us * (i % 3)));
    return Item{i, rng.next_bits()};
  };
}

/// The (index, draw) stream of `batches` batches.
std::vector<std::pair<std::int64_t, std::uint64_t>> stream(PrefetchLoader<Item>& loader,
                                                           std::int64_t batches) {
  std::vector<std::pair<std::int64_t, std::uint64_t>> out;
  for (std::int64_t b = 0; b < batches; ++b) {
    const auto batch = loader.next();
    REQUIRE(batch.items.size() == batch.indices.size());
    for (std::size_t k = 0; k < batch.items.size(); ++k) {
      REQUIRE(batch.items[k].index == batch.indices[k]);
      out.emplace_back(batch.items[k].index, batch.items[k].draw);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("PrefetchLoader: every sample once per epoch, same order for any thread count",
          "[train][data]") {
  const std::int64_t n = 23;
  const auto opt = LoaderOptions{}.batch_size(5).seed(7);
  std::vector<std::pair<std::int64_t, std::uint64_t>> reference;
  for (int threads : {0, 1, 3}) {
    PrefetchLoader<Item> loader(n, identity_load(50), LoaderOptions{opt}.threads(threads));
    REQUIRE(loader.batches_per_epoch() == 5);
    std::vector<std::pair<std::int64_t, std::uint64_t>> all;
    for (int epoch = 0; epoch < 3; ++epoch) {
      std::set<std::int64_t> seen;
      for (std::int64_t b = 0; b < 5; ++b) {
        const auto batch = loader.next();
        CHECK(batch.epoch == epoch);
        CHECK(batch.batch == b);
        REQUIRE(batch.items.size() == (b < 4 ? 5u : 3u));
        for (const auto& it : batch.items) {
          seen.insert(it.index);
          all.emplace_back(it.index, it.draw);
        }
      }
      REQUIRE(seen.size() == static_cast<std::size_t>(n));
      CHECK(*seen.rbegin() == n - 1);
    }
    if (reference.empty())
      reference = all;
    else
      REQUIRE(all == reference);
  }
  // reshuffled each epoch; the same sample draws differently in another epoch
  std::vector<std::int64_t> e0, e1;
  for (std::int64_t k = 0; k < n; ++k) {
    e0.push_back(reference[static_cast<std::size_t>(k)].first);
    e1.push_back(reference[static_cast<std::size_t>(n + k)].first);
  }
  CHECK(e0 != e1);
  CHECK(reference[0].second != nddr::data::sample_rng(7, 1, reference[0].first).next_bits());
  CHECK(reference[0].second == nddr::data::sample_rng(7, 0, reference[0].first).next_bits());
  // another seed, another order
  PrefetchLoader<Item> other(n, identity_load(), LoaderOptions{opt}.seed(8));
  CHECK(stream(other, 5) != std::vector(reference.begin(), reference.begin() + n));
}

TEST_CASE("PrefetchLoader: no shuffle, drop_last, resume at a batch", "[train][data]") {
  PrefetchLoader<Item> plain(7, identity_load(), LoaderOptions{}.batch_size(3).shuffle(false));
  const auto s = stream(plain, 3);
  for (std::int64_t k = 0; k < 7; ++k) CHECK(s[static_cast<std::size_t>(k)].first == k);

  PrefetchLoader<Item> dropped(7, identity_load(),
                               LoaderOptions{}.batch_size(3).drop_last(true).threads(2));
  CHECK(dropped.batches_per_epoch() == 2);
  for (int b = 0; b < 6; ++b) CHECK(dropped.next().items.size() == 3);

  PrefetchLoader<Item> full(11, identity_load(), LoaderOptions{}.batch_size(4).seed(3).threads(2));
  const auto whole = stream(full, 9);
  PrefetchLoader<Item> resumed(11, identity_load(),
                               LoaderOptions{}.batch_size(4).seed(3).threads(2).start_batch(4));
  CHECK(resumed.position() == 4);
  const auto tail = stream(resumed, 5);
  // batches 0..3 hold 4 + 4 + 3 + 4 samples
  CHECK(tail == std::vector(whole.begin() + 15, whole.end()));
}

TEST_CASE("PrefetchLoader: shards are disjoint and complete", "[train][data]") {
  const std::int64_t n = 17;
  for (std::int64_t world : {1, 2, 3, 4}) {
    for (int epoch = 0; epoch < 2; ++epoch) {
      std::multiset<std::int64_t> all;
      for (std::int64_t rank = 0; rank < world; ++rank) {
        PrefetchLoader<Item> loader(
            n, identity_load(),
            LoaderOptions{}.batch_size(2).seed(5).threads(2).shard(rank, world).start_batch(0));
        const std::int64_t per = loader.batches_per_epoch();
        for (int e = 0; e < epoch; ++e) stream(loader, per);
        for (const auto& [index, draw] : stream(loader, per)) all.insert(index);
      }
      REQUIRE(all.size() == static_cast<std::size_t>(n));
      REQUIRE(std::set<std::int64_t>(all.begin(), all.end()).size() == static_cast<std::size_t>(n));
    }
  }
  CHECK_THROWS_AS(PrefetchLoader<Item>(n, identity_load(), LoaderOptions{}.shard(2, 2)),
                  nddr::OptionError);
  CHECK_THROWS_WITH(PrefetchLoader<Item>(2, identity_load(), LoaderOptions{}.shard(2, 3)),
                    Contains("gets no sample"));
}

TEST_CASE("PrefetchLoader: worker exceptions reach next() with the sample", "[train][data]") {
  for (int threads : {0, 1, 3}) {
    auto load = [](std::int64_t i, nddr::Rng&) -> Item {
      if (i == 4) throw nddr::IoError("nddr::io::read_png: 'frame4.png': truncated file");
      return Item{i, 0};
    };
    PrefetchLoader<Item> loader(6, load,
                                LoaderOptions{}.batch_size(2).shuffle(false).threads(threads));
    CHECK(loader.next().indices == std::vector<std::int64_t>{0, 1});
    CHECK(loader.next().indices == std::vector<std::int64_t>{2, 3});
    CHECK_THROWS_AS(loader.next(), nddr::IoError);
    CHECK_THROWS_WITH(loader.next(), Contains("sample 4") && Contains("frame4.png") &&
                                         Contains("epoch 0, batch 2"));
  }
  PrefetchLoader<Item> loader(
      3, [](std::int64_t, nddr::Rng&) -> Item { throw std::runtime_error("boom"); },
      LoaderOptions{}.threads(2));
  CHECK_THROWS_AS(loader.next(), nddr::Error);
}

TEST_CASE("PrefetchLoader: destructor with a half-consumed epoch does not hang", "[train][data]") {
  std::atomic<int> loads{0};
  const auto start = std::chrono::steady_clock::now();
  {
    PrefetchLoader<Item> loader(
        1000,
        [&](std::int64_t i, nddr::Rng&) {
          ++loads;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          return Item{i, 0};
        },
        LoaderOptions{}.batch_size(4).threads(3).prefetch(3));
    loader.next();
    loader.next();
  }
  {
    // destroyed before anything was consumed
    PrefetchLoader<Item> idle(50, identity_load(), LoaderOptions{}.threads(4));
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  // bounded queue: at most (consumed + prefetch) batches were loaded
  CHECK(loads.load() <= (2 + 3) * 4);
}

TEST_CASE("PrefetchLoader: bad options", "[train][data]") {
  CHECK_THROWS_WITH(PrefetchLoader<Item>(0, identity_load(), LoaderOptions{}),
                    Contains("size must be >= 1, got 0"));
  CHECK_THROWS_WITH(PrefetchLoader<Item>(3, identity_load(), LoaderOptions{}.batch_size(0)),
                    Contains("batch_size"));
  CHECK_THROWS_WITH(PrefetchLoader<Item>(3, identity_load(), LoaderOptions{}.threads(-1)),
                    Contains("threads"));
  CHECK_THROWS_WITH(
      PrefetchLoader<Item>(3, identity_load(), LoaderOptions{}.batch_size(4).drop_last(true)),
      Contains("leaves no batch"));
}
