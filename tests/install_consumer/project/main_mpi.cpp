// A data-parallel program against the installed package (nddr::mpi, and nddr::nccl when the
// installed build has it): `mpirun -np N consumer_mpi` averages one value over the ranks. The
// install test compiles and links it only (running needs a launcher).
#include <nddr/distributed.hpp>
#include <nddr/nddr.hpp>

#include <iostream>

int main(int argc, char** argv) {
  nddr::distributed::MpiEnvironment env(&argc, &argv);
  nddr::distributed::MpiCommunicator comm;
  nddr::Context<nddr::Cpu> ctx(1);
  nddr::Tensor<double> v(nddr::Shape{1}, static_cast<double>(comm.rank()));
  comm.all_reduce_average(ctx, v.view());
  std::cout << "nddr mpi consumer ok: rank " << comm.rank() << " of " << comm.size()
            << ", average rank " << v[0] << "\n";
  return 0;
}
