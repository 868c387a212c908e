"""The local QEMU lab: image build, VM lifecycle, SSH and Ansible provisioning.

One module per concern:
  paths      where the cache (images, keys, wheels) and the running lab's state live
  progress   plain progress lines (CI) or a live line (terminal)
  image      mmdebstrap image cached by package-list hash, kernel/initrd extraction
  qemu       accelerator probe and QEMU argv construction, start/stop by pid file
  ports      free-port picking on 127.0.0.1
  sshkeys    the lab's SSH key and ssh/scp argv
  inventory  Ansible inventory writing and reading
  bundle     the project + pre-downloaded wheels shipped to offline hosts
  provision  running ansible-playbook
  manager    up/down/status/destroy, tying the above together
  cli        the `bench lab` subcommands
"""
