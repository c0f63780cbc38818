#pragma once
// Test support: start a program as a child process with its output in a file, wait for it with a
// time limit.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace nddr_test {

/// Starts `binary` with `args`, stdout and stderr to `log` (truncated); returns its pid.
inline pid_t spawn(const std::string& binary, const std::vector<std::string>& args,
                   const std::string& log) {
  std::vector<std::string> copy{binary};
  copy.insert(copy.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(126);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits up to `seconds` for `pid`; its wait status (WIFEXITED, WEXITSTATUS, ...), or -1 after
/// killing it when it took longer.
inline int wait_status(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 200; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    ::usleep(5000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

/// `wait_status` as an exit status: the code, 128 + the signal when killed by one, or -1.
inline int wait_exit_code(pid_t pid, int seconds) {
  const int status = wait_status(pid, seconds);
  if (status == -1) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace nddr_test
