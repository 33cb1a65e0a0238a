namespace MixLoRA.GraphBuilder.IO;

/// <summary>
/// Files reached through symbolic links, as the Hugging Face cache lays out every model
/// (snapshots/REV/model.safetensors → ../../blobs/SHA): sizes and maps must be the target's, not the link's.
/// </summary>
public static class LinkedFile
{
    /// <summary>The final target of <paramref name="path"/> when it is a symbolic link (chains followed), else the path.</summary>
    public static string Resolve(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return path;
        var target = info.ResolveLinkTarget(returnFinalTarget: true);
        return target is { Exists: true } ? target.FullName
            : throw Fail.User($"{path} is a symbolic link to {info.LinkTarget}, which does not exist", "fetch the model again, or point at a folder whose files exist");
    }

    /// <summary>The size of the file a path names, through links.</summary>
    public static long Length(string path) => new FileInfo(Resolve(path)).Length;
}
