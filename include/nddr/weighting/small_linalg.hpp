#pragma once
/// \file
/// Small dense linear algebra for the K x K problems of the weighting methods (K = number of
/// tasks, 2..~16), written as plain loops over Eigen::MatrixXd / VectorXd elements so that
/// including the weighting headers does not instantiate Eigen's decompositions
/// (SelfAdjointEigenSolver, FullPivLU, LDLT cost tens of CPU-seconds per translation unit).
///
/// - `symmetric_eigen`: cyclic Jacobi; eigenvalues ascending (as Eigen::SelfAdjointEigenSolver),
///   orthonormal eigenvectors (signs may differ from Eigen's), a sweep limit reported as failure.
/// - `FullPivLu`: LU with full (complete) pivoting reproducing Eigen::FullPivLU (3.4): same
///   pivot choice (largest |a_ij| of the remaining block, first in column-major order on ties),
///   elimination continues past tiny pivots and stops only at an exactly zero block, rank =
///   number of pivots with |u_ii| > epsilon * min(rows, cols) * max |pivot|, `solve` sets the
///   free variables (columns past the rank) to zero and ignores the rows past the rank.
/// - `Ldlt`: symmetric LDL^T with diagonal pivoting reproducing Eigen::LDLT<MatrixXd, Lower>
///   (3.4): left-looking, pivot = largest |diagonal| of the not yet factored part of the
///   *input* diagonal; `ok()` is false exactly where Eigen's info() is NumericalIssue: a zero
///   pivot (|d_k| == 0, NaN included) with a nonzero entry below it in L's column (an all-zero
///   diagonal: the matrix is not zero); `solve` uses D's pseudo-inverse with Eigen's cutoff
///   |d_i| > DBL_MIN. Only the lower triangle of the input is read. The pivots and D agree with
///   Eigen to rounding (same algorithm, loops in a possibly different summation order than
///   Eigen's SIMD kernels), so for a *singular* matrix an exact-zero test on a rounded entry can
///   come out differently, as it can between Eigen builds with and without FMA/AVX. Nash-MTL's
///   Hessian M + diag(1/a^2) is positive definite: there ok() is false only for non-finite input.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

namespace nddr::weighting::linalg {

/// Eigen-decomposition of a symmetric matrix (only the lower triangle is read).
struct SymmetricEigen {
  Eigen::VectorXd values;   ///< ascending
  Eigen::MatrixXd vectors;  ///< column i belongs to values[i]; orthonormal
  bool converged = false;   ///< false: the sweep limit was reached (or the input is not finite)
  int sweeps = 0;
};

/// Cyclic Jacobi: rotations zero each off-diagonal entry in turn until the off-diagonal
/// Frobenius norm is <= epsilon * the matrix's Frobenius norm (quadratic convergence: a
/// handful of sweeps for K <= 16), at most `max_sweeps` sweeps.
inline SymmetricEigen symmetric_eigen(const Eigen::MatrixXd& m, int max_sweeps = 100) {
  const Eigen::Index n = m.rows();
  SymmetricEigen r;
  Eigen::MatrixXd a(n, n);
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < n; ++i) a(i, j) = i >= j ? m(i, j) : m(j, i);
  Eigen::MatrixXd v = Eigen::MatrixXd::Identity(n, n);
  double total = 0.0;
  for (Eigen::Index j = 0; j < n; ++j)
    for (Eigen::Index i = 0; i < n; ++i) total += a(i, j) * a(i, j);
  const double eps = std::numeric_limits<double>::epsilon();
  const auto off_norm2 = [&] {
    double s = 0.0;
    for (Eigen::Index j = 0; j < n; ++j)
      for (Eigen::Index i = 0; i < n; ++i)
        if (i != j) s += a(i, j) * a(i, j);
    return s;
  };
  bool finite = std::isfinite(total);
  for (int sweep = 0; finite && sweep <= max_sweeps; ++sweep) {
    const double off = off_norm2();
    if (!std::isfinite(off)) break;
    if (off <= eps * eps * total) {
      r.converged = true;
      r.sweeps = sweep;
      break;
    }
    if (sweep == max_sweeps) break;
    for (Eigen::Index p = 0; p + 1 < n; ++p) {
      for (Eigen::Index q = p + 1; q < n; ++q) {
        const double apq = a(p, q);
        if (apq == 0.0) continue;
        const double theta = (a(q, q) - a(p, p)) / (2.0 * apq);
        // t = tan of the rotation angle, the smaller root of t^2 + 2 theta t - 1 = 0
        const double t = std::abs(theta) > 1e150
                             ? 0.5 / theta
                             : (theta >= 0.0 ? 1.0 : -1.0) /
                                   (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0);
        const double s = t * c;
        // A <- J^T A J, J = identity except J_pp = J_qq = c, J_pq = s, J_qp = -s
        for (Eigen::Index k = 0; k < n; ++k) {
          const double akp = a(k, p), akq = a(k, q);
          a(k, p) = c * akp - s * akq;
          a(k, q) = s * akp + c * akq;
        }
        for (Eigen::Index k = 0; k < n; ++k) {
          const double apk = a(p, k), aqk = a(q, k);
          a(p, k) = c * apk - s * aqk;
          a(q, k) = s * apk + c * aqk;
        }
        a(p, q) = a(q, p) = 0.0;
        for (Eigen::Index k = 0; k < n; ++k) {
          const double vkp = v(k, p), vkq = v(k, q);
          v(k, p) = c * vkp - s * vkq;
          v(k, q) = s * vkp + c * vkq;
        }
      }
    }
  }
  // sort ascending (stable insertion sort of the column indices)
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  for (Eigen::Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
  for (std::size_t i = 1; i < order.size(); ++i)
    for (std::size_t j = i; j > 0 && a(order[j], order[j]) < a(order[j - 1], order[j - 1]); --j)
      std::swap(order[j], order[j - 1]);
  r.values.resize(n);
  r.vectors.resize(n, n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const Eigen::Index src = order[static_cast<std::size_t>(i)];
    r.values[i] = a(src, src);
    for (Eigen::Index k = 0; k < n; ++k) r.vectors(k, i) = v(k, src);
  }
  return r;
}

/// LU decomposition with full pivoting, P A Q = L U (see the file comment for the Eigen
/// semantics reproduced).
class FullPivLu {
 public:
  FullPivLu() = default;
  explicit FullPivLu(const Eigen::MatrixXd& m) { compute(m); }

  void compute(const Eigen::MatrixXd& m) {
    lu_ = m;
    const Eigen::Index rows = lu_.rows(), cols = lu_.cols();
    const Eigen::Index size = std::min(rows, cols);
    rowp_.resize(static_cast<std::size_t>(rows));
    colp_.resize(static_cast<std::size_t>(cols));
    for (Eigen::Index i = 0; i < rows; ++i) rowp_[static_cast<std::size_t>(i)] = i;
    for (Eigen::Index j = 0; j < cols; ++j) colp_[static_cast<std::size_t>(j)] = j;
    max_pivot_ = 0.0;
    for (Eigen::Index k = 0; k < size; ++k) {
      // largest |a_ij| of the remaining block; ties: first in column-major order (Eigen's visitor)
      Eigen::Index pr = k, pc = k;
      double big = -1.0;
      for (Eigen::Index j = k; j < cols; ++j)
        for (Eigen::Index i = k; i < rows; ++i) {
          const double x = std::abs(lu_(i, j));
          if (x > big) {
            big = x;
            pr = i;
            pc = j;
          }
        }
      if (big == 0.0) break;  // the remaining block is zero: nothing left to eliminate
      if (big > max_pivot_) max_pivot_ = big;
      if (pr != k) {
        for (Eigen::Index j = 0; j < cols; ++j) std::swap(lu_(k, j), lu_(pr, j));
        std::swap(rowp_[static_cast<std::size_t>(k)], rowp_[static_cast<std::size_t>(pr)]);
      }
      if (pc != k) {
        for (Eigen::Index i = 0; i < rows; ++i) std::swap(lu_(i, k), lu_(i, pc));
        std::swap(colp_[static_cast<std::size_t>(k)], colp_[static_cast<std::size_t>(pc)]);
      }
      const double piv = lu_(k, k);
      for (Eigen::Index i = k + 1; i < rows; ++i) lu_(i, k) /= piv;
      for (Eigen::Index j = k + 1; j < cols; ++j)
        for (Eigen::Index i = k + 1; i < rows; ++i) lu_(i, j) -= lu_(i, k) * lu_(k, j);
    }
  }

  /// Eigen's default threshold: epsilon * min(rows, cols).
  double threshold() const {
    return std::numeric_limits<double>::epsilon() *
           static_cast<double>(std::min(lu_.rows(), lu_.cols()));
  }
  /// Number of pivots with |u_ii| > threshold() * max |pivot|.
  Eigen::Index rank() const {
    const double cut = max_pivot_ * threshold();
    Eigen::Index r = 0;
    for (Eigen::Index i = 0; i < std::min(lu_.rows(), lu_.cols()); ++i)
      if (std::abs(lu_(i, i)) > cut) ++r;
    return r;
  }
  bool is_invertible() const { return lu_.rows() == lu_.cols() && rank() == lu_.cols(); }
  double max_pivot() const { return max_pivot_; }

  /// A solution of A x = b when one exists (Eigen's FullPivLU::solve): the rows of U past the
  /// rank are ignored and the free variables are zero; x = 0 when the rank is 0.
  Eigen::VectorXd solve(const Eigen::VectorXd& b) const {
    const Eigen::Index rows = lu_.rows(), cols = lu_.cols();
    const Eigen::Index small = std::min(rows, cols);
    const Eigen::Index r = rank();
    Eigen::VectorXd x = Eigen::VectorXd::Zero(cols);
    if (r == 0) return x;
    Eigen::VectorXd c(rows);
    for (Eigen::Index i = 0; i < rows; ++i) c[i] = b[rowp_[static_cast<std::size_t>(i)]];
    for (Eigen::Index i = 0; i < small; ++i)  // unit lower triangle
      for (Eigen::Index j = 0; j < i; ++j) c[i] -= lu_(i, j) * c[j];
    for (Eigen::Index i = r - 1; i >= 0; --i) {  // upper triangle of the first `rank` rows
      for (Eigen::Index j = i + 1; j < r; ++j) c[i] -= lu_(i, j) * c[j];
      c[i] /= lu_(i, i);
    }
    for (Eigen::Index i = 0; i < r; ++i) x[colp_[static_cast<std::size_t>(i)]] = c[i];
    return x;
  }

 private:
  Eigen::MatrixXd lu_;
  std::vector<Eigen::Index> rowp_, colp_;  // row i of P A is row rowp_[i] of A; same for Q
  double max_pivot_ = 0.0;
};

/// Symmetric LDL^T with diagonal pivoting, P A P^T = L D L^T (see the file comment for the
/// Eigen semantics reproduced).
class Ldlt {
 public:
  explicit Ldlt(const Eigen::MatrixXd& m) { compute(m); }

  void compute(const Eigen::MatrixXd& m) {
    const Eigen::Index n = m.rows();
    mat_.resize(n, n);  // lower triangle used: L below the diagonal, D on it
    for (Eigen::Index j = 0; j < n; ++j)
      for (Eigen::Index i = j; i < n; ++i) mat_(i, j) = m(i, j);
    trans_.assign(static_cast<std::size_t>(n), 0);
    for (Eigen::Index i = 0; i < n; ++i) trans_[static_cast<std::size_t>(i)] = i;
    ok_ = true;
    if (n <= 1) return;
    std::vector<double> temp(static_cast<std::size_t>(n));
    for (Eigen::Index k = 0; k < n; ++k) {
      Eigen::Index big = k;  // largest |diagonal| of rows k.. (first on ties)
      for (Eigen::Index i = k + 1; i < n; ++i)
        if (std::abs(mat_(i, i)) > std::abs(mat_(big, big))) big = i;
      trans_[static_cast<std::size_t>(k)] = big;
      if (big != k) {  // symmetric swap of k and big within the lower triangle
        for (Eigen::Index j = 0; j < k; ++j) std::swap(mat_(k, j), mat_(big, j));
        for (Eigen::Index i = big + 1; i < n; ++i) std::swap(mat_(i, k), mat_(i, big));
        std::swap(mat_(k, k), mat_(big, big));
        for (Eigen::Index i = k + 1; i < big; ++i) std::swap(mat_(i, k), mat_(big, i));
      }
      for (Eigen::Index j = 0; j < k; ++j)
        temp[static_cast<std::size_t>(j)] = mat_(j, j) * mat_(k, j);
      double dot = 0.0;
      for (Eigen::Index j = 0; j < k; ++j) dot += mat_(k, j) * temp[static_cast<std::size_t>(j)];
      mat_(k, k) -= dot;
      for (Eigen::Index i = k + 1; i < n; ++i) {
        double s = 0.0;
        for (Eigen::Index j = 0; j < k; ++j) s += mat_(i, j) * temp[static_cast<std::size_t>(j)];
        mat_(i, k) -= s;
      }
      const double akk = mat_(k, k);
      const bool valid = std::abs(akk) > 0.0;
      if (k == 0 && !valid) {  // the whole diagonal is zero: fine only for the zero matrix
        for (Eigen::Index j = 0; j < n; ++j) {
          trans_[static_cast<std::size_t>(j)] = j;
          for (Eigen::Index i = j + 1; i < n; ++i) ok_ = ok_ && mat_(i, j) == 0.0;
        }
        return;
      }
      for (Eigen::Index i = k + 1; i < n; ++i) {
        if (valid)
          mat_(i, k) /= akk;
        else
          ok_ = ok_ && mat_(i, k) == 0.0;
      }
    }
  }

  /// Eigen's info() == Success.
  bool ok() const { return ok_; }
  /// D (in pivoted order).
  Eigen::VectorXd d() const {
    Eigen::VectorXd v(mat_.rows());
    for (Eigen::Index i = 0; i < v.size(); ++i) v[i] = mat_(i, i);
    return v;
  }

  /// x = P^T L^-T D^+ L^-1 P b, D^+ zeroing |d_i| <= DBL_MIN (Eigen's LDLT::solve).
  Eigen::VectorXd solve(const Eigen::VectorXd& b) const {
    const Eigen::Index n = mat_.rows();
    Eigen::VectorXd x = b;
    for (Eigen::Index k = 0; k < n; ++k) std::swap(x[k], x[trans_[static_cast<std::size_t>(k)]]);
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < i; ++j) x[i] -= mat_(i, j) * x[j];
    for (Eigen::Index i = 0; i < n; ++i)
      x[i] = std::abs(mat_(i, i)) > std::numeric_limits<double>::min() ? x[i] / mat_(i, i) : 0.0;
    for (Eigen::Index i = n - 1; i >= 0; --i)
      for (Eigen::Index j = i + 1; j < n; ++j) x[i] -= mat_(j, i) * x[j];
    for (Eigen::Index k = n - 1; k >= 0; --k)
      std::swap(x[k], x[trans_[static_cast<std::size_t>(k)]]);
    return x;
  }

 private:
  Eigen::MatrixXd mat_;
  std::vector<Eigen::Index> trans_;
  bool ok_ = true;
};

/// y = M x with plain loops (no Eigen product instantiation).
inline Eigen::VectorXd mat_vec(const Eigen::MatrixXd& m, const Eigen::VectorXd& x) {
  Eigen::VectorXd y = Eigen::VectorXd::Zero(m.rows());
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    const double xj = x[j];
    for (Eigen::Index i = 0; i < m.rows(); ++i) y[i] += m(i, j) * xj;
  }
  return y;
}

}  // namespace nddr::weighting::linalg
