"""``/winrm``: Windows servers over WinRM, with windows_exporter-compatible metrics."""
