#pragma once
/// \file
/// `Experiment<MultiTask<...>, Tasks<...>, Optimizer, Schedule>`: the compile-time description of
/// a training run that `Trainer` instantiates: the network spec, one `Task` per network output,
/// the optimiser template (any `concepts::Optimizer`: Sgd, Adam, AdamW, or AnyOptimizer to choose
/// one of them at run time) and the learning-rate schedule type.

#include <cstddef>
#include <tuple>

#include "nddr/concepts/optimizer.hpp"
#include "nddr/concepts/task.hpp"
#include "nddr/core/device.hpp"
#include "nddr/multitask/network.hpp"
#include "nddr/optim/adam.hpp"
#include "nddr/optim/any.hpp"
#include "nddr/optim/schedule.hpp"
#include "nddr/optim/sgd.hpp"

namespace nddr {

/// A flat list of task specs, one per network output, in task order.
template <class... X>
struct Tasks {
  static constexpr std::size_t size = sizeof...(X);
  template <std::size_t K>
  using task = std::tuple_element_t<K, std::tuple<X...>>;
};

template <class Spec, class TaskList, template <class, class> class Optimizer = Sgd,
          class Schedule = PolySchedule>
struct Experiment;

template <class Spec, class... X, template <class, class> class Optimizer, class Schedule>
struct Experiment<Spec, Tasks<X...>, Optimizer, Schedule> {
  static_assert((concepts::require_task<X>() && ...));
  static_assert(concepts::require_optimizer<Optimizer, float, Cpu>(),
                "nddr::Experiment: the Optimizer template must model nddr::concepts::Optimizer");
  static_assert(sizeof...(X) == Spec::tasks,
                "nddr::Experiment: give exactly one Task per network output (Tasks<...> must have "
                "as many entries as the MultiTask spec has backbones)");
  using spec = Spec;
  using tasks = Tasks<X...>;
  using schedule = Schedule;
  template <class T, class D>
  using optimizer = Optimizer<T, D>;
  template <class D, class T>
  using network = Network<Spec, D, T>;
  static constexpr std::size_t task_count = sizeof...(X);
};

}  // namespace nddr
