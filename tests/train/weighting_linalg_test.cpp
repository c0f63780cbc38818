// Unit tests of nddr/weighting/small_linalg.hpp: Jacobi eigen-decomposition, full-pivot LU
// (Eigen FullPivLU semantics) and pivoted LDL^T (Eigen LDLT semantics).

#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nddr/weighting/small_linalg.hpp>

namespace {

namespace la = nddr::weighting::linalg;
using Eigen::MatrixXd;
using Eigen::VectorXd;

/// Deterministic uniform(-1, 1) numbers (LCG), independent of any library RNG.
struct Lcg {
  std::uint64_t s;
  double next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  }
};

MatrixXd random_matrix(Eigen::Index r, Eigen::Index c, Lcg& g) {
  MatrixXd m(r, c);
  for (Eigen::Index j = 0; j < c; ++j)
    for (Eigen::Index i = 0; i < r; ++i) m(i, j) = g.next();
  return m;
}

MatrixXd random_symmetric(Eigen::Index n, Lcg& g) {
  MatrixXd m = random_matrix(n, n, g);
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < j; ++i) m(i, j) = m(j, i);
  return m;
}

double max_abs(const MatrixXd& m) { return m.cwiseAbs().maxCoeff(); }

}  // namespace

TEST_CASE("weighting linalg: Jacobi eigen-decomposition of random symmetric matrices") {
  Lcg g{12345};
  for (Eigen::Index n : {1, 2, 3, 5, 8, 12, 16}) {
    for (int rep = 0; rep < 5; ++rep) {
      MatrixXd a = random_symmetric(n, g);
      if (rep == 1) a *= 1e6;  // scale does not matter
      if (rep == 2) {         // a repeated eigenvalue: Gram matrix of rank <= 2 plus identity
        const MatrixXd b = random_matrix(n, 2, g);
        a = b * b.transpose() + MatrixXd::Identity(n, n);
      }
      const la::SymmetricEigen e = la::symmetric_eigen(a);
      REQUIRE(e.converged);
      const double scale = std::max(1.0, max_abs(a));
      const MatrixXd av = a * e.vectors;
      const MatrixXd vl = e.vectors * e.values.asDiagonal();
      CHECK(max_abs(av - vl) <= 1e-12 * scale);
      CHECK(max_abs(e.vectors.transpose() * e.vectors - MatrixXd::Identity(n, n)) <= 1e-12);
      for (Eigen::Index i = 1; i < n; ++i) CHECK(e.values[i - 1] <= e.values[i]);
    }
  }
}

TEST_CASE("weighting linalg: Jacobi eigenvalues of a known matrix, zero matrix, non-finite input") {
  MatrixXd a(3, 3);
  a << 2, 1, 0, 1, 2, 0, 0, 0, 5;  // eigenvalues 1, 3, 5
  const la::SymmetricEigen e = la::symmetric_eigen(a);
  REQUIRE(e.converged);
  CHECK(std::abs(e.values[0] - 1.0) <= 1e-14);
  CHECK(std::abs(e.values[1] - 3.0) <= 1e-14);
  CHECK(std::abs(e.values[2] - 5.0) <= 1e-14);
  const la::SymmetricEigen z = la::symmetric_eigen(MatrixXd::Zero(4, 4));
  CHECK(z.converged);
  CHECK(z.values.isZero(0.0));
  CHECK(z.vectors.isIdentity(0.0));
  a(1, 0) = a(0, 1) = std::nan("");
  CHECK_FALSE(la::symmetric_eigen(a).converged);
}

TEST_CASE("weighting linalg: full-pivot LU solves a random system to its known solution") {
  Lcg g{777};
  for (Eigen::Index n : {1, 2, 4, 9, 16}) {
    const MatrixXd a = random_matrix(n, n, g) + 3.0 * MatrixXd::Identity(n, n);
    const VectorXd x = random_matrix(n, 1, g);
    const VectorXd b = a * x;
    const la::FullPivLu lu(a);
    CHECK(lu.rank() == n);
    CHECK(lu.is_invertible());
    CHECK(max_abs(lu.solve(b) - x) <= 1e-12);
  }
}

TEST_CASE("weighting linalg: full-pivot LU of a rank-deficient matrix as Eigen FullPivLU") {
  // rank 2: row 2 = row 0 + row 1. Eigen's FullPivLU gives the solution whose free variable
  // (the column pivoted last) is zero.
  MatrixXd a(3, 3);
  a << 1, 2, 3, 4, 5, 6, 5, 7, 9;
  const la::FullPivLu lu(a);
  CHECK(lu.rank() == 2);
  CHECK_FALSE(lu.is_invertible());
  CHECK(lu.max_pivot() == 9.0);  // the first pivot is the largest entry
  const VectorXd x0 = (VectorXd(3) << 1.0, -1.0, 2.0).finished();
  const VectorXd b = a * x0;  // consistent right-hand side
  const VectorXd x = lu.solve(b);
  CHECK(max_abs(a * x - b) <= 1e-12);
  // Pivot order: |9| at (2, 2) first, then the largest of the 2x2 Schur complement; the
  // column left over is a free variable and is exactly zero.
  int zeros = 0;
  for (Eigen::Index i = 0; i < 3; ++i) zeros += x[i] == 0.0 ? 1 : 0;
  CHECK(zeros == 1);
  CHECK(x[2] != 0.0);  // the first pivot's column is never free
  // Rank threshold: a pivot at the relative level epsilon * min(rows, cols) does not count,
  // one clearly above it does.
  MatrixXd d = MatrixXd::Zero(2, 2);
  d(0, 0) = 1.0;
  d(1, 1) = 1e-17;  // < 2 * 2.2e-16
  CHECK(la::FullPivLu(d).rank() == 1);
  const VectorXd xd = la::FullPivLu(d).solve((VectorXd(2) << 3.0, 5.0).finished());
  CHECK(xd[0] == 3.0);
  CHECK(xd[1] == 0.0);
  d(1, 1) = 1e-14;
  CHECK(la::FullPivLu(d).rank() == 2);
  // the zero matrix: rank 0, solution zero
  const la::FullPivLu z(MatrixXd::Zero(3, 3));
  CHECK(z.rank() == 0);
  CHECK(z.solve(VectorXd::Ones(3)).isZero(0.0));
}

TEST_CASE("weighting linalg: LDLT solves symmetric systems, definite and indefinite") {
  Lcg g{4242};
  for (Eigen::Index n : {1, 2, 3, 7, 16}) {
    const MatrixXd b = random_matrix(n, n, g);
    const MatrixXd spd = b * b.transpose() + 0.1 * MatrixXd::Identity(n, n);
    const MatrixXd indef = random_symmetric(n, g) + 2.0 * MatrixXd::Identity(n, n);
    for (const MatrixXd& a : {spd, indef}) {
      const VectorXd x = random_matrix(n, 1, g);
      const la::Ldlt ldlt(a);
      REQUIRE(ldlt.ok());
      const double cond = 1.0 / std::max(1e-300, ldlt.d().cwiseAbs().minCoeff());
      CHECK(max_abs(ldlt.solve(a * x) - x) <= 1e-12 * std::max(1.0, cond));
    }
  }
}

TEST_CASE("weighting linalg: LDLT of singular symmetric matrices as Eigen LDLT info") {
  // PSD singular (rank 1): the zero pivot has a zero column below it: Success, and the
  // solve of a consistent system uses D's pseudo-inverse.
  MatrixXd a(2, 2);
  a << 1, 1, 1, 1;
  const la::Ldlt l1(a);
  CHECK(l1.ok());
  const VectorXd x = l1.solve((VectorXd(2) << 2.0, 2.0).finished());
  CHECK(std::abs(x[0] + x[1] - 2.0) <= 1e-15);
  // the zero matrix: Success (Eigen: all-zero diagonal and nothing below it)
  CHECK(la::Ldlt(MatrixXd::Zero(3, 3)).ok());
  // zero diagonal with a nonzero off-diagonal entry: NumericalIssue
  MatrixXd b(2, 2);
  b << 0, 1, 1, 0;
  CHECK_FALSE(la::Ldlt(b).ok());
  // a zero pivot reached after elimination with a nonzero entry below it: NumericalIssue
  MatrixXd c(3, 3);
  c << 1, 1, 0, 1, 1, 1, 0, 1, 0;
  CHECK_FALSE(la::Ldlt(c).ok());
  // a non-finite matrix: NumericalIssue (NaN pivot with nonzero entries below)
  MatrixXd d = MatrixXd::Identity(3, 3);
  d(0, 0) = std::nan("");
  d(1, 0) = d(0, 1) = 0.5;
  CHECK_FALSE(la::Ldlt(d).ok());
}
